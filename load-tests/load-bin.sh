# Sourced by the load-test scripts: sets LOAD_BIN to the scan2order-load binary ($LOAD_BIN if set, else
# $CARGO_TARGET_DIR (or ./target)/{release,debug}/scan2order-load), or exits 2 naming the caller.
if [[ -z "${LOAD_BIN:-}" ]]; then
  target=${CARGO_TARGET_DIR:-target}
  for c in "$target/release/scan2order-load" "$target/debug/scan2order-load"; do
    if [[ -x "$c" ]]; then LOAD_BIN=$c; break; fi
  done
fi
[[ -x "${LOAD_BIN:-}" ]] || { echo "$(basename "$0"): scan2order-load not built (set LOAD_BIN)" >&2; exit 2; }
