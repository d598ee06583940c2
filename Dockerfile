# citygate container image: the proxy and its CLI, nothing else.
#   docker build -t citygate .
#   docker run -p 8080:8080 -v citygate-ca:/var/lib/citygate/.mitmproxy citygate
# The configuration lives in /etc/citygate (mount your own over it); the proxy's CA
# certificate and key live in /var/lib/citygate/.mitmproxy (keep it on a volume, so every
# restart and every replica presents the same CA that the city's devices trust).

FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY proxy proxy
COPY addons addons
COPY directory directory
RUN python -m venv /opt/citygate \
 && /opt/citygate/bin/pip install --no-cache-dir --upgrade pip \
 && /opt/citygate/bin/pip install --no-cache-dir .

FROM python:3.12-slim
RUN useradd --system --uid 10001 --create-home --home-dir /var/lib/citygate citygate \
 && install -d -o citygate -g citygate -m 0750 /var/log/citygate
COPY --from=build /opt/citygate /opt/citygate
# The demo configuration; its `ldif: ../directory/demo.ldif` resolves to /etc/directory.
COPY config /etc/citygate
COPY directory/demo.ldif /etc/directory/demo.ldif
ENV PATH=/opt/citygate/bin:$PATH PYTHONUNBUFFERED=1
USER citygate
EXPOSE 8080
# The access log (README "Reviewing decisions"): keep it on a volume too.
VOLUME ["/var/lib/citygate/.mitmproxy", "/var/log/citygate"]
HEALTHCHECK --interval=30s --timeout=3s \
  CMD python -c "import socket; socket.create_connection(('127.0.0.1', 8080), 2).close()"
ENTRYPOINT ["citygate"]
CMD ["run", "--listen-host", "0.0.0.0", "--listen-port", "8080", \
     "--config", "/etc/citygate/citygate.yaml", "--confdir", "/var/lib/citygate/.mitmproxy", \
     "--set", "citygate_audit_directory=/var/log/citygate"]
