# credproxy: a static binary on distroless, running as nonroot.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN mkdir -p /out/state/public /out/state/private && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/credproxy ./cmd/credproxy

# The init container of deploy/kubernetes/credproxy-transparent.yaml:
# credproxy iptables needs the iptables binaries (docker build --target init).
FROM debian:12-slim AS init
RUN apt-get update && apt-get install -y --no-install-recommends iptables && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/credproxy /usr/local/bin/credproxy
ENTRYPOINT ["credproxy"]

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/credproxy /usr/local/bin/credproxy
# the CA lives here (a volume in deploy/); nonroot must own it to mint it
COPY --from=build --chown=65532:65532 /out/state /var/lib/credproxy
USER nonroot
EXPOSE 3128 9464
ENTRYPOINT ["credproxy"]
CMD ["run", "--config", "/etc/credproxy/rules.yaml"]
