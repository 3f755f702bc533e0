# Sourced by demo.sh and test-all.sh: the Debian packages Floodgate's local stack and its
# build need, installed when missing (as root; otherwise the exact command is printed).
# PostgreSQL, PgBouncer (and, for the report, a font) are also installed by the Rust code
# on first use; doing it here once keeps parallel test binaries from racing on apt.

if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo is not on PATH: install a Rust toolchain (rustup) first." >&2
    exit 1
fi

missing=()
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing+=(postgresql postgresql-contrib)
[ -x /usr/sbin/pgbouncer ] || missing+=(pgbouncer)
command -v cc >/dev/null 2>&1 || missing+=(build-essential)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || missing+=(fonts-dejavu-core)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        echo "== installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        echo "missing packages; as root run: apt-get update && apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
fi
