# vex-lens image for docker-compose.yml (rdkafka's bundled librdkafka needs a C toolchain).
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake libcurl4-openssl-dev zlib1g-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin vex-lens

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY --from=build /src/target/release/vex-lens /usr/local/bin/vex-lens
COPY config/ /app/config/
EXPOSE 8080
ENTRYPOINT ["vex-lens"]
# 0.0.0.0 inside the container: the service refuses that without an API token
# ([[api.tokens]] in a mounted config, or VEXLENS_API__TOKENS as docker-compose.yml sets
# it), since the container's peers are never loopback; the error says so.
CMD ["serve", "--listen", "0.0.0.0:8080"]
