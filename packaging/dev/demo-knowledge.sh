#!/usr/bin/env bash
# Retrieval from a company database, end to end, from a source tree: a throwaway PostgreSQL cluster
# on a Unix socket with the sample company (tests/fixtures/company: products, policies, support
# articles, the read-only role moed_reader), `moed serve` on a private session bus with that
# database as the knowledge source `company`, the sql-retrieval plugin installed with a grant for
# it, and a `moectl generate` answer that lists the rows it was given.
#
# Usage: packaging/dev/demo-knowledge.sh [QUESTION]
# Needs what tests/setup.sh installs (postgresql, dbus); run as root, the cluster runs as nobody.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"
question="${1:-How long do I have to return unused items?}"

cargo build --release --locked -p moed -p moectl >&2
plugins/build.sh >&2
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$("$repo/packaging/onnxruntime/provision.sh")}"
bin="${CARGO_TARGET_DIR:-$repo/target}/release"
pg_bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
[[ -x "$pg_bin/initdb" ]] || { echo "demo-knowledge: no PostgreSQL server; run tests/setup.sh" >&2; exit 1; }

work="$(mktemp -d /tmp/moed-demo.XXXXXX)"
chmod 0755 "$work"
as_owner() { if [[ $(id -u) -eq 0 ]]; then setpriv --reuid=nobody --regid=nogroup --clear-groups "$@"; else "$@"; fi; }
mkdir "$work/pg"
[[ $(id -u) -eq 0 ]] && chown nobody:nogroup "$work/pg"
cleanup() {
  as_owner "$pg_bin/pg_ctl" -D "$work/pg/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "== a throwaway PostgreSQL cluster with the sample company" >&2
as_owner "$pg_bin/initdb" -D "$work/pg/data" -U postgres --auth=trust >/dev/null
as_owner "$pg_bin/pg_ctl" -D "$work/pg/data" -l "$work/pg/log" -w \
  -o "-k $work/pg -p 5432 -c listen_addresses=''" start >/dev/null
psql=("$pg_bin/psql" -q -v ON_ERROR_STOP=1 -h "$work/pg" -p 5432 -U postgres)
"${psql[@]}" -d postgres -c "CREATE DATABASE company" >/dev/null
for f in tests/fixtures/company/[0-9]*.sql; do "${psql[@]}" -d company -f "$f" >/dev/null; done

cat >"$work/secrets.toml" <<EOF
[company]
connection = "host=$work/pg port=5432 dbname=company user=moed_reader password=reader-test-password"
EOF
chmod 0600 "$work/secrets.toml"
cat >"$work/moed.toml" <<EOF
[models]
dirs = ["$repo/models"]
default = "moe-mini"

[access]
authorizer = "group"

[knowledge]
secrets_file = "$work/secrets.toml"

[knowledge.sources.company]
kind = "postgres"
credentials = "company"
query = "any_word"
timeout_ms = 1000
template = """
SELECT id, source, text, ts_rank(tsv, q)::float8 AS score
  FROM knowledge, websearch_to_tsquery('english', \$1) AS q
 WHERE tsv @@ q
 ORDER BY score DESC, id
 LIMIT \$2"""
EOF

echo "== moed on a private bus, sql-retrieval granted the source 'company'" >&2
exec dbus-run-session -- bash -euo pipefail -c '
  bin="$1"; work="$2"; repo="$3"; question="$4"
  XDG_STATE_HOME="$work/state" "$bin/moed" serve --session --config "$work/moed.toml" 2>"$work/moed.log" &
  daemon=$!
  trap "kill $daemon 2>/dev/null; wait $daemon 2>/dev/null" EXIT
  for _ in $(seq 100); do
    "$bin/moectl" --bus session --json status 2>/dev/null | grep -q "\"state\": *\"ready\"" && break
    kill -0 $daemon 2>/dev/null || { cat "$work/moed.log" >&2; exit 1; }
    sleep 0.1
  done
  ctl() { echo "\$ moectl $*"; "$bin/moectl" --bus session "$@"; }
  ctl knowledge sources
  ctl knowledge search --source company "$question"
  ctl plugins install "$repo/target/plugins/sql-retrieval.wasm" --grant sources=company --set sources=[\"company\"]
  ctl generate --max-tokens 40 --temperature 0 "$question"
' demo-knowledge "$bin" "$work" "$repo" "$question"
