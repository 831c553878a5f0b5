#!/bin/sh
# Entry point of the thoth-pbx Asterisk image (docker/Dockerfile.asterisk).
#
# Renders the same templates the test harness renders (config/asterisk/*.conf, copied into
# the image at $THOTH_AST_TEMPLATES) into $THOTH_AST_ETC_DIR, replacing each @@KEY@@ with
# the value of the environment variable THOTH_AST_KEY, exactly as
# scripts/asterisk_sandbox.py render_templates() does (tests/integration/test_harness.py
# compares the two byte for byte). Then it execs the command (asterisk -f by default).
#
#   asterisk-entrypoint.sh render          render all templates (overwrite) and exit
#   asterisk-entrypoint.sh CMD...          render templates whose file is missing, exec CMD
#
# A config volume keeps files that exist (your edits, and the files thoth-pbx writes, such
# as pjsip_thoth.conf); set THOTH_AST_FORCE_RENDER=1 to re-render the base files.
set -eu

: "${THOTH_AST_TEMPLATES:=/usr/share/thoth-pbx/asterisk}"
: "${THOTH_AST_ETC_DIR:=/etc/asterisk}"
: "${THOTH_AST_RUN_DIR:=/run/asterisk}"
: "${THOTH_AST_LOG_DIR:=/var/log/asterisk}"
: "${THOTH_AST_SPOOL_DIR:=/var/spool/asterisk}"
: "${THOTH_AST_DB_DIR:=/var/lib/asterisk}"
: "${THOTH_AST_CACHE_DIR:=/var/cache/asterisk}"
: "${THOTH_AST_SYSTEM_NAME:=thoth-asterisk}"
: "${THOTH_AST_BIND:=0.0.0.0}"
: "${THOTH_AST_AMI_PORT:=5038}"
: "${THOTH_AST_AMI_USER:=thoth}"
: "${THOTH_AST_AMI_PERMIT:=0.0.0.0/0.0.0.0}"
: "${THOTH_AST_HTTP_PORT:=8088}"
: "${THOTH_AST_ARI_USER:=thoth}"
: "${THOTH_AST_SIP_PORT:=5060}"
: "${THOTH_AST_RTP_START:=10000}"
: "${THOTH_AST_RTP_END:=10200}"
: "${THOTH_AST_FORCE_RENDER:=0}"

die() { echo "asterisk-entrypoint: $*" >&2; exit 1; }

[ -n "${THOTH_AST_AMI_SECRET:-}" ] || die "set THOTH_AST_AMI_SECRET (AMI password for thoth-pbx)"
[ -n "${THOTH_AST_ARI_PASSWORD:-}" ] || die "set THOTH_AST_ARI_PASSWORD (ARI password for thoth-pbx)"

KEYS="ETC_DIR RUN_DIR LOG_DIR SPOOL_DIR DB_DIR CACHE_DIR SYSTEM_NAME BIND AMI_PORT AMI_USER
AMI_SECRET AMI_PERMIT HTTP_PORT ARI_USER ARI_PASSWORD SIP_PORT RTP_START RTP_END"

SED_ARGS=""
for key in $KEYS; do
    eval "value=\${THOTH_AST_$key}"
    case "$value" in
        *[!A-Za-z0-9._/+:-]*) die "THOTH_AST_$key has characters outside [A-Za-z0-9._/+:-]" ;;
    esac
    SED_ARGS="$SED_ARGS -e s|@@${key}@@|${value}|g"
done

render_all() {  # $1 = 1: overwrite existing files
    mkdir -p "$THOTH_AST_ETC_DIR"
    for tpl in "$THOTH_AST_TEMPLATES"/*.conf; do
        out="$THOTH_AST_ETC_DIR/$(basename "$tpl")"
        if [ "$1" = 1 ] || [ ! -e "$out" ]; then
            # shellcheck disable=SC2086
            sed $SED_ARGS "$tpl" > "$out.tmp"
            if grep -q '@@[A-Z0-9_]*@@' "$out.tmp"; then
                rm -f "$out.tmp"
                die "$tpl has a placeholder this entry point does not know"
            fi
            mv "$out.tmp" "$out"
        fi
    done
}

if [ "${1:-}" = render ]; then
    render_all 1
    exit 0
fi

render_all "$THOTH_AST_FORCE_RENDER"
mkdir -p "$THOTH_AST_RUN_DIR" "$THOTH_AST_LOG_DIR" "$THOTH_AST_SPOOL_DIR" \
    "$THOTH_AST_DB_DIR" "$THOTH_AST_CACHE_DIR"
exec "$@"
