# The modelrollout image: `modelrollout operator` by default; the same image runs the shadow
# comparator (`modelrollout shadow-server`) and the CLI. Runs as the non-root user 65532 with a
# read-only root filesystem in manifests/ and the Helm chart: it writes only under /tmp ($HOME).
#
#   docker build -t ghcr.io/modelrollout/modelrollout:0.1.0 .

# --- build: install the project (runtime dependencies only, no test extras) into a venv ---------
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/modelrollout
WORKDIR /src
COPY pyproject.toml README.md ./
COPY canary/ canary/
COPY controller/ controller/
COPY registry/ registry/
RUN /opt/modelrollout/bin/pip install . \
 && /opt/modelrollout/bin/pip check

# --- runtime: the venv only, owned by root and read-only for the user that runs it -------------
FROM python:3.11-slim
LABEL org.opencontainers.image.title="modelrollout" \
      org.opencontainers.image.description="Progressive delivery for MLflow models on KServe" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --gid 65532 modelrollout \
 && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin modelrollout
COPY --from=build /opt/modelrollout /opt/modelrollout
ENV PATH=/opt/modelrollout/bin:$PATH \
    HOME=/tmp \
    TMPDIR=/tmp \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /tmp
USER 65532:65532
# 8080: the operator (webhooks, /metrics, probes); 8090: the shadow comparator.
EXPOSE 8080 8090
ENTRYPOINT ["modelrollout"]
CMD ["operator"]
