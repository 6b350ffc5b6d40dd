#!/usr/bin/env bash
# Builds the cattail server image as an OCI archive, without a Docker daemon, and optionally
# runs it once to check that it starts. See docs/OPERATIONS.md section 2.1.
#
#   deploy/image/build.sh [--debug] [--check] [--tag TAG] [--out DIR]
#
#   --debug   use the debug build (target/debug/cattail) instead of a release build; CI passes
#             it because it already has the debug build from its tests
#   --check   unpack the image with umoci and run its entrypoint (chroot, as user 65532):
#             `cattail --help` prints the usage, and `cattail serve` starts and answers /livez
#   --tag     the image's name and tag (default cattail:<workspace version>)
#   --out     where the OCI archive goes (default target/image)
#
# Needs: cargo and a C compiler (as the workspace does), buildah (Debian: apt-get install
# buildah), and for --check umoci and curl. Runs as root (buildah's vfs storage and chroot).
set -euo pipefail
cd "$(dirname "$0")/../.."

profile=release
check=false
tag=""
out=target/image
while [ $# -gt 0 ]; do
  case "$1" in
    --debug) profile=debug ;;
    --check) check=true ;;
    --tag) tag=${2:?--tag needs a value}; shift ;;
    --out) out=${2:?--out needs a value}; shift ;;
    *) echo "build.sh: unknown argument $1 (see the header of this file)" >&2; exit 2 ;;
  esac
  shift
done
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
tag=${tag:-cattail:$version}
for tool in buildah ldd objcopy; do
  command -v "$tool" >/dev/null || { echo "build.sh: $tool is required (apt-get install buildah binutils)" >&2; exit 1; }
done

echo "== cargo build ($profile)"
if [ "$profile" = release ]; then
  cargo build --release --locked -p cattail-server --bin cattail
else
  cargo build --locked -p cattail-server --bin cattail
fi
binary=target/$profile/cattail

echo "== root filesystem"
work=$(mktemp -d)
pid=""
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
rootfs=$work/rootfs
mkdir -p "$rootfs/usr/local/bin" "$rootfs/etc" "$rootfs/tmp"
chmod 1777 "$rootfs/tmp"
# Debug info stays out of the image (the release profile keeps line tables for backtraces).
objcopy --strip-debug "$binary" "$rootfs/usr/local/bin/cattail"
# Every shared library the binary loads, at the path the loader looks for it, and the loader.
ldd "$binary" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | while read -r lib; do
  mkdir -p "$rootfs$(dirname "$lib")"
  cp -L "$lib" "$rootfs$lib"
done
if ldd "$binary" | grep -q 'not found'; then
  echo "build.sh: $binary needs a library that is not installed:" >&2
  ldd "$binary" >&2
  exit 1
fi
# The system CA bundle: the Kubernetes client's TLS verifier (rustls-platform-verifier) loads the
# system roots at start and refuses to start without any, even when the kubeconfig brings its
# own CA. Debian's ca-certificates package provides it.
ca_bundle=/etc/ssl/certs/ca-certificates.crt
[ -s "$ca_bundle" ] || { echo "build.sh: $ca_bundle is missing (apt-get install ca-certificates)" >&2; exit 1; }
mkdir -p "$rootfs/etc/ssl/certs"
cp -L "$ca_bundle" "$rootfs/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$rootfs/etc/group"
mkdir -p "$rootfs/home/nonroot" && chown 65532:65532 "$rootfs/home/nonroot"
find "$rootfs" -type f | sed "s|^$rootfs||" | sort

echo "== buildah (vfs storage, chroot isolation: no daemon)"
cp deploy/image/Containerfile "$work/Containerfile"
buildah_args=(--storage-driver vfs)
buildah "${buildah_args[@]}" build --isolation chroot --format oci \
  --label "org.opencontainers.image.version=$version" -t "$tag" -f "$work/Containerfile" "$work"
mkdir -p "$out"
archive=$out/cattail.oci.tar
rm -f "$archive"
buildah "${buildah_args[@]}" push "$tag" "oci-archive:$archive:$tag"
buildah "${buildah_args[@]}" rmi "$tag" >/dev/null
echo "image $tag: $archive ($(du -h "$archive" | cut -f1))"

if [ "$check" != true ]; then exit 0; fi

echo "== check: unpack with umoci and run the entrypoint"
for tool in umoci curl; do
  command -v "$tool" >/dev/null || { echo "build.sh: --check needs $tool (apt-get install umoci curl)" >&2; exit 1; }
done
mkdir -p "$work/layout"
tar -xf "$archive" -C "$work/layout"
umoci unpack --image "$work/layout:$tag" "$work/bundle" >/dev/null
bundle_rootfs=$work/bundle/rootfs
# The image's own entrypoint, user and default command, from its config.
entrypoint=$(python3 -c 'import json,sys; c=json.load(open(sys.argv[1])); p=c["process"]; print(p["user"]["uid"], p["user"]["gid"], " ".join(p["args"]))' "$work/bundle/config.json")
read -r uid gid args <<<"$entrypoint"
echo "entrypoint: $args (user $uid:$gid)"
[ "$uid" = 65532 ] || { echo "build.sh: the image runs as uid $uid, not 65532" >&2; exit 1; }
entry=${args%% *}
run() { chroot --userspec="$uid:$gid" "$bundle_rootfs" "$entry" "$@"; }

help=$(run --help)
grep -q 'serve' <<<"$help" || { echo "build.sh: cattail --help printed no usage:" >&2; echo "$help" >&2; exit 1; }
echo "cattail --help: ok"

# `cattail serve` with the image's default command, plaintext, against an API server address
# where nothing listens: it must start, bind its ports and answer /livez (not /readyz: it
# cannot list anything), and stop on SIGTERM.
admin_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
grpc_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$bundle_rootfs/etc/cattail"
cat >"$bundle_rootfs/etc/cattail/kubeconfig" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters: [{name: none, cluster: {server: "https://127.0.0.1:1", insecure-skip-tls-verify: true}}]
users: [{name: none, user: {token: none}}]
contexts: [{name: none, context: {cluster: none, user: none}}]
current-context: none
KUBECONFIG
log=$work/serve.log
# chroot execs the entrypoint, so $! is cattail itself. The image's default command (`serve`)
# comes first, then the flags for this run.
command_args=${args#"$entry"}
# shellcheck disable=SC2086 # the image's default command, split into words
chroot --userspec="$uid:$gid" "$bundle_rootfs" "$entry" $command_args \
  --kubeconfig /etc/cattail/kubeconfig --insecure-plaintext \
  --listen "127.0.0.1:$grpc_port" --admin-listen "127.0.0.1:$admin_port" >"$log" 2>&1 &
pid=$!
livez=""
for _ in $(seq 1 100); do
  livez=$(curl -fsS "http://127.0.0.1:$admin_port/livez" 2>/dev/null) && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
if [ -z "$livez" ]; then
  echo "build.sh: cattail serve did not answer /livez:" >&2
  cat "$log" >&2
  exit 1
fi
readyz=$(curl -sS "http://127.0.0.1:$admin_port/readyz" || true)
kill -TERM "$pid"
status=0
wait "$pid" || status=$?
pid=""
echo "cattail serve: /livez $livez, /readyz $readyz, exit $status after SIGTERM"
head -3 "$log"
[ "$status" = 0 ] || { echo "build.sh: cattail serve exited $status" >&2; cat "$log" >&2; exit 1; }
