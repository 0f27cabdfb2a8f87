# Sourced by scripts/run and scripts/test: find Python >= 3.10 and make .venv with the
# project installed (editable), re-installing only when pyproject.toml changed.
# ensure_venv EXTRAS   (EXTRAS: "" for the package alone, "dev" for the tests)

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.venv"

find_python() {
    local candidate
    for candidate in "${PYTHON:-}" python3 python3.13 python3.12 python3.11 python3.10 python; do
        [ -n "$candidate" ] || continue
        command -v "$candidate" >/dev/null 2>&1 || continue
        if "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    echo "asyncapy needs Python 3.10 or newer: install it (Debian: apt-get install python3 python3-venv), or set PYTHON=/path/to/python3" >&2
    return 1
}

make_venv() {
    local python
    python=$(find_python) || return 1
    echo "creating $VENV with $python" >&2
    if ! "$python" -m venv "$VENV" 2>/dev/null; then
        rm -rf "$VENV"
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
            # Debian splits venv (ensurepip) out of python3.
            local version
            version=$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "python$version-venv" >&2 || return 1
            "$python" -m venv "$VENV" || return 1
        else
            echo "'$python -m venv' failed: install venv support (Debian: sudo apt-get install python3-venv) and run this again" >&2
            return 1
        fi
    fi
}

ensure_venv() {
    local extras=$1 spec stamp want
    spec="$ROOT"
    [ -n "$extras" ] && spec="$ROOT[$extras]"
    if [ ! -x "$VENV/bin/python" ]; then
        make_venv || return 1
    fi
    want=$(cksum < "$ROOT/pyproject.toml")
    # Installed with the dev extra covers the package alone too.
    for stamp in "$VENV/.installed-$extras" "$VENV/.installed-dev"; do
        if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
            return 0
        fi
    done
    echo "installing asyncapy${extras:+ with the $extras extra} into $VENV" >&2
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >&2 || return 1
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$spec" >&2 || return 1
    echo "$want" > "$VENV/.installed-$extras"
}
