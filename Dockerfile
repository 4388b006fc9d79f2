# ringkv in a container: a release build in a Rust image, then only the binary in a slim
# Debian image, running as an unprivileged user with its data in a volume.
#
#   docker build -t ringkv --build-arg RINGKV_GIT_COMMIT=$(git rev-parse --short HEAD) .
#   docker run -p 127.0.0.1:7080:7080 -p 127.0.0.1:7379:7379 -v ringkv-data:/var/lib/ringkv ringkv
#
# The node listens on every interface in the container. Protected mode stays on: until a user
# is created (`ringkv user add ...` against the node), only clients inside the container are
# served. docker-compose.yml runs a three-node cluster.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# No .git in the build context: the commit `ringkv --version` shows is passed in.
ARG RINGKV_GIT_COMMIT=unknown
ENV RINGKV_GIT_COMMIT=${RINGKV_GIT_COMMIT}
RUN cargo build --release --locked -p ringkv \
 && strip target/release/ringkv

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/ringkv --create-home ringkv
COPY --from=build /src/target/release/ringkv /usr/local/bin/ringkv
USER ringkv
WORKDIR /var/lib/ringkv
VOLUME ["/var/lib/ringkv"]
ENV RINGKV_DATA_DIR=/var/lib/ringkv \
    RINGKV_HTTP=0.0.0.0:7080 \
    RINGKV_RESP=0.0.0.0:7379 \
    RINGKV_LISTEN=0.0.0.0:7946
# REST, Redis protocol, and node-to-node (gossip over UDP, RPC over TCP, one port).
EXPOSE 7080/tcp 7379/tcp 7946/tcp 7946/udp
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD curl -fsS http://127.0.0.1:7080/healthz || exit 1
STOPSIGNAL SIGTERM
ENTRYPOINT ["ringkv"]
CMD ["server"]
