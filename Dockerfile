# The couchshare operator image: the Rust binary on distroless (glibc, no shell, no package
# manager), running as UID 65532.
#   docker build -t ghcr.io/couchshare/couchshare:0.1.0 .
# The Helm chart (charts/couchshare) runs it as `couchshare run ...` with a read-only root
# filesystem; it writes nothing to disk.

FROM rust:1.95-bookworm AS builder
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked --bin couchshare \
    && cp target/release/couchshare /couchshare

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /couchshare /couchshare
USER 65532:65532
# /healthz, /readyz and /metrics.
EXPOSE 8080
ENTRYPOINT ["/couchshare"]
CMD ["run"]
