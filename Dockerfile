# prepis as a plain container: Azure Container Apps, Kubernetes, `docker run`.
#
# The image holds the static handler, the model and nothing else (~100 MB with base).
# Build the pieces on Linux first (no Rust toolchain in the image, so no Docker-only build
# path to keep working):
#
#   make package              # dist/handler (static, musl) + dist/prepis-functions/models/
#   docker build -t prepis .
#   docker run -p 8080:8080 -e PREPIS_CONTEXT_KEY=$(openssl rand -base64 32) prepis
#
# Probes: GET /api/status?probe=ready answers 503 until the model is loaded and while
# draining (readiness), GET /api/status always 200 (liveness). README: "Containers".
FROM scratch
COPY dist/handler /app/handler
COPY dist/prepis-functions/models/ /app/models/
# No passwd file in scratch: a numeric non-root user. The handler writes no files.
USER 65532:65532
ENV PORT=8080
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=4s --start-period=30s CMD ["/app/handler", "probe"]
# SIGTERM drains: new requests get 503 shutting_down, work in flight finishes
# (PREPIS_SHUTDOWN_SECONDS, default 20 s: keep the orchestrator's grace period above it).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/app/handler"]
