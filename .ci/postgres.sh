#!/usr/bin/env bash
# Installs (if missing) and starts a local PostgreSQL from Debian's packages,
# with password login postgres/postgres on 127.0.0.1:5432. Idempotent.
set -euo pipefail
if ! command -v pg_ctlcluster >/dev/null 2>&1 || ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  echo "installing PostgreSQL from Debian's packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq postgresql >/dev/null
fi
version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
if ! pg_lsclusters -h | awk '{print $1" "$2}' | grep -q "^$version main$"; then
  pg_createcluster "$version" main >/dev/null
fi
if ! pg_lsclusters -h | awk '$1=="'"$version"'" && $2=="main" {print $4}' | grep -q online; then
  pg_ctlcluster "$version" main start
fi
for _ in $(seq 1 30); do
  if pg_isready -h 127.0.0.1 -p 5432 -q; then break; fi
  sleep 1
done
pg_isready -h 127.0.0.1 -p 5432
su postgres -c "psql -q -c \"ALTER USER postgres PASSWORD 'postgres'\""
# Leftover test databases from earlier runs on this machine.
# One psql session for all of them: a session per database took about a second each (hundreds
# pile up after a day of test runs).
su postgres -c "psql -qAt -c \"SELECT format('DROP DATABASE IF EXISTS %I;', datname) FROM pg_database WHERE datname LIKE 'idem_test_%'\"" \
  > /tmp/idem-drop-test-dbs.sql
su postgres -c "psql -q -f /tmp/idem-drop-test-dbs.sql" >/dev/null 2>&1 || true
rm -f /tmp/idem-drop-test-dbs.sql
echo "PostgreSQL $version is up on 127.0.0.1:5432"
