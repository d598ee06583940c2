# citygate container image: the proxy and its CLI, nothing else (README "Docker").
#   docker build -t citygate .
#   docker run -p 8080:8080 -p 127.0.0.1:9090:9090 \
#     -v citygate-ca:/var/lib/citygate/.mitmproxy -v citygate-log:/var/log/citygate citygate
# Ports: 8080 the proxy, 9090 /metrics, /healthz and /readyz (no authentication: keep it on a
# management network). The configuration lives in /etc/citygate (the demo city's; mount your
# own over it); the proxy's CA certificate and key live in /var/lib/citygate/.mitmproxy (keep
# it on a volume, so every restart and every replica presents the same CA that the city's
# devices trust); the access log is written to /var/log/citygate (keep it on a volume too).

ARG PYTHON_IMAGE=python:3.12-slim-bookworm

# --- build: a virtualenv with citygate installed the way the Makefile and README do it --------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
# gssapi and krb5 (Kerberos sign-in) compile against MIT krb5's headers.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libkrb5-dev gcc \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md LICENSE constraints.txt ./
COPY proxy proxy
COPY addons addons
COPY directory directory
RUN python -m venv /opt/citygate \
 && /opt/citygate/bin/pip install --upgrade pip \
 && /opt/citygate/bin/pip install -c constraints.txt .

# --- runtime: the virtualenv, the demo configuration and an unprivileged user ---------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="citygate" \
      org.opencontainers.image.description="Access-control forward proxy enforcing a city's social-media policy" \
      org.opencontainers.image.licenses="Apache-2.0"
# MIT krb5's GSSAPI library, which gssapi and krb5 link against (Negotiate sign-in).
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgssapi-krb5-2 libkrb5-3 \
 && rm -rf /var/lib/apt/lists/*
RUN useradd --system --user-group --uid 10001 --create-home --home-dir /var/lib/citygate \
      --shell /usr/sbin/nologin citygate \
 && install -d -o citygate -g citygate -m 0700 /var/lib/citygate/.mitmproxy \
 && install -d -o citygate -g citygate -m 0750 /var/log/citygate
COPY --from=build /opt/citygate /opt/citygate
# The demo configuration; its `ldif: ../directory/demo.ldif` resolves to /etc/directory.
COPY config /etc/citygate
COPY directory/demo.ldif /etc/directory/demo.ldif
ENV PATH=/opt/citygate/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
USER citygate
WORKDIR /var/lib/citygate
EXPOSE 8080 9090
VOLUME ["/etc/citygate", "/var/lib/citygate/.mitmproxy", "/var/log/citygate"]
# /healthz answers while the process is alive (README "Installing on a cluster"). The proxy
# handler is empty so that an HTTP(S)_PROXY set in the environment is not used for it.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request as u; u.build_opener(u.ProxyHandler({})).open('http://127.0.0.1:9090/healthz', timeout=3)"]
ENTRYPOINT ["citygate"]
CMD ["run", "--listen-host", "0.0.0.0", "--listen-port", "8080", \
     "--config", "/etc/citygate/citygate.yaml", "--confdir", "/var/lib/citygate/.mitmproxy", \
     "--set", "citygate_audit_directory=/var/log/citygate", \
     "--set", "citygate_metrics_listen=0.0.0.0:9090"]
