#!/bin/sh
# render-config.sh TEMPLATE OUTPUT COMMAND [ARG...]
# Writes TEMPLATE to OUTPUT with every ${NAME} replaced by the environment variable NAME
# (literally: a value may hold any character), then runs COMMAND. Prometheus and
# Alertmanager cannot read the environment themselves; this keeps .env the only place where
# ports and secrets are written. An unset NAME stops the start with its name (never an
# empty value that fails later and elsewhere). Comment lines are copied unchanged.
set -eu
template=$1
output=$2
shift 2
awk '
/^[ \t]*#/ { print; next }    # comments are copied as they are
{
    line = $0
    out = ""
    while (match(line, /\$\{[A-Za-z_][A-Za-z0-9_]*\}/)) {
        name = substr(line, RSTART + 2, RLENGTH - 3)
        if (!(name in ENVIRON)) {
            printf "render-config.sh: %s line %d: %s is not set (set it in .env)\n", FILENAME, FNR, name > "/dev/stderr"
            missing = 1
        }
        out = out substr(line, 1, RSTART - 1) ENVIRON[name]
        line = substr(line, RSTART + RLENGTH)
    }
    print out line
}
END { exit missing }
' "$template" > "$output.part"
mv "$output.part" "$output"
exec "$@"
