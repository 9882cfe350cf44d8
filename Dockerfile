# Tasker's container image: the tasker binary, static, on a distroless base
# that runs it as a non-root user. Build with `docker build -t tasker .`;
# docs/deploy.md ("Container image") explains how to run it.
#
# e2e/image_test.go reads this file: it builds the binary with the builder
# stage's ENV and `go build` flags below, checks it is static, and runs it
# the way this image does (ENTRYPOINT, CMD, ENV, USER, HEALTHCHECK). Keep
# each instruction on one line, so that the test keeps reading it.

# Builder: the Go toolchain of go.mod.
FROM golang:1.26-bookworm AS build
WORKDIR /src
# A static binary (no libc: the pure-Go resolver and user lookups), and
# the dependencies exactly as go.sum has them.
ENV CGO_ENABLED=0 GOFLAGS=-mod=readonly
# Dependencies first, in a layer of their own: rebuilt only when go.mod or
# go.sum change.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN go build -trimpath -ldflags="-s -w" -o /out/tasker ./cmd/tasker
# The data dir, to be owned by the runtime user (no shell in the final image).
RUN mkdir -p /out/data

# Runtime: distroless static (CA certificates, tzdata, /etc/passwd with
# nonroot = 65532, no shell, no package manager).
FROM gcr.io/distroless/static-debian12:nonroot
LABEL org.opencontainers.image.title="tasker" \
      org.opencontainers.image.description="Tasker agent: distributed workflow orchestrator sidecar and Raft server" \
      org.opencontainers.image.source="https://github.com/tasker-run/tasker" \
      org.opencontainers.image.documentation="https://github.com/tasker-run/tasker/blob/main/docs/deploy.md"
COPY --from=build /out/tasker /tasker
COPY --from=build --chown=65532:65532 /out/data /var/lib/tasker
# Settings come from TASKER_* variables or flags (docs/operations.md); the
# data dir is the volume below. Raft's log and the gossip keyring live there.
ENV TASKER_DATA_DIR=/var/lib/tasker
VOLUME ["/var/lib/tasker"]
USER 65532:65532
# Local API (on 127.0.0.1 unless -client says otherwise), RPC, gossip, Raft.
EXPOSE 7420 7421 7422/tcp 7422/udp 7423
# Readiness: SERVING once the agent knows a leader. It runs inside the
# container, so the local API can stay on loopback.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 CMD ["/tasker", "health"]
ENTRYPOINT ["/tasker"]
CMD ["agent"]
