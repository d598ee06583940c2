#!/bin/sh
# slapd for citygate's evaluation stack. On the first start (an empty data folder) it loads
# every *.ldif in $LDIF_DIR in name order (directory/demo.ldif, then bootstrap.ldif), then adds
# citygate's service account with the password in CITYGATE_LDAP_PASSWORD. Entries are added
# with ldapadd to a running slapd, so the memberof overlay fills in memberOf. Then slapd runs
# in the foreground. tests/packaging runs this script against Debian's slapd.
set -eu

: "${LDAP_ADMIN_PASSWORD:?set LDAP_ADMIN_PASSWORD: the password of cn=admin,dc=city,dc=example}"
: "${CITYGATE_LDAP_PASSWORD:?set CITYGATE_LDAP_PASSWORD: the password of citygate's service account}"
CONF_TEMPLATE=${SLAPD_CONF_TEMPLATE:-/etc/ldap/citygate-slapd.conf}
DATA=${LDAP_DATA_DIR:-/var/lib/citygate-ldap}
RUN=${LDAP_RUN_DIR:-/run/slapd}
LDIF_DIR=${LDIF_DIR:-/ldif}
URLS=${LDAP_URLS:-ldap:///}
LOG_LEVEL=${LDAP_LOG_LEVEL:-stats}
SLAPD_USER=${SLAPD_USER-openldap}   # empty: run as the invoking user (the tests)
SERVICE_DN="cn=citygate,ou=services,dc=city,dc=example"
ADMIN_DN="cn=admin,dc=city,dc=example"
MARKER="$DATA/.citygate-loaded"

umask 077
mkdir -p "$DATA" "$RUN"
LDAPI="ldapi://$(printf '%s' "$RUN/ldapi" | sed 's#/#%2F#g')"
set --
if [ -n "$SLAPD_USER" ]; then
  set -- -u "$SLAPD_USER" -g "$SLAPD_USER"
fi

secret="$RUN/secret"
trap 'rm -f "$secret"' EXIT
hash_of() {
  printf '%s' "$1" > "$secret"
  slappasswd -T "$secret"
}

printf '%s' "$LDAP_ADMIN_PASSWORD" > "$secret"
rootpw=$(slappasswd -T "$secret")
sed -e "s#@ROOTPW@#$rootpw#" -e "s#@DATA@#$DATA#" -e "s#@RUN@#$RUN#" "$CONF_TEMPLATE" > "$RUN/slapd.conf"
if [ -n "$SLAPD_USER" ]; then
  chown -R "$SLAPD_USER:$SLAPD_USER" "$DATA" "$RUN"
fi

if [ ! -e "$MARKER" ]; then
  echo "citygate-ldap: first start: loading $LDIF_DIR/*.ldif into $DATA"
  rm -f "$DATA/data.mdb" "$DATA/lock.mdb"   # a load that failed half way starts over
  /usr/sbin/slapd -f "$RUN/slapd.conf" -h "$LDAPI" "$@"
  tries=0
  until ldapwhoami -x -H "$LDAPI" >/dev/null 2>&1; do
    tries=$((tries + 1))
    [ "$tries" -lt 100 ] || { echo "citygate-ldap: slapd did not start" >&2; exit 1; }
    sleep 0.1
  done
  printf '%s' "$LDAP_ADMIN_PASSWORD" > "$secret"
  for ldif in "$LDIF_DIR"/*.ldif; do
    echo "citygate-ldap: loading $ldif"
    ldapadd -x -H "$LDAPI" -D "$ADMIN_DN" -y "$secret" -f "$ldif" >/dev/null
  done
  service_hash=$(hash_of "$CITYGATE_LDAP_PASSWORD")
  printf '%s' "$LDAP_ADMIN_PASSWORD" > "$secret"
  printf 'dn: %s\nobjectClass: applicationProcess\nobjectClass: simpleSecurityObject\ncn: citygate\nuserPassword: %s\n' \
    "$SERVICE_DN" "$service_hash" | ldapadd -x -H "$LDAPI" -D "$ADMIN_DN" -y "$secret" >/dev/null
  kill "$(cat "$RUN/slapd.pid")"
  tries=0
  while [ -e "$RUN/slapd.pid" ]; do
    tries=$((tries + 1))
    [ "$tries" -lt 100 ] || { echo "citygate-ldap: slapd did not stop" >&2; exit 1; }
    sleep 0.1
  done
  touch "$MARKER"
  echo "citygate-ldap: loaded"
fi

rm -f "$secret"
exec /usr/sbin/slapd -f "$RUN/slapd.conf" -h "$URLS $LDAPI" "$@" -d "$LOG_LEVEL"
