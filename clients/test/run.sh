#!/bin/sh
# Tests of clients/tokenmint-exchange.sh and of templates/exchange.yml's job script, against
# a real `tokenmint serve --dev` that this script starts.
#
#   dash clients/test/run.sh
#   busybox sh clients/test/run.sh
#
# The client (and the component's script) run under $SHELL_UNDER_TEST, by default the shell
# running this file (read from /proc on Linux), e.g. SHELL_UNDER_TEST="busybox sh".
# TOKENMINT_BIN: the binary (default: target/debug/tokenmint, from `cargo build --locked`).
# python3 runs only the scripted fake server (clients/test/fake_server.py) for the cases a
# real service cannot produce on demand: a 503 or 429 with Retry-After, odd JSON.
# KEEP_WORK=1 keeps the work directory. Exit status: 0 when every check passed.
# shellcheck disable=SC2016 # the expected messages name variables literally
set -u
LC_ALL=C
export LC_ALL

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
client=$root/clients/tokenmint-exchange.sh
template=$root/templates/exchange.yml
bin=${TOKENMINT_BIN:-$root/target/debug/tokenmint}
case $bin in /*) ;; *) bin=$(pwd)/$bin ;; esac

if [ -z "${SHELL_UNDER_TEST:-}" ]; then
    exe=$(readlink "/proc/$$/exe" 2>/dev/null || true)
    case $exe in
        '') SHELL_UNDER_TEST='sh' ;;
        *busybox*) SHELL_UNDER_TEST="$exe sh" ;;
        *) SHELL_UNDER_TEST=$exe ;;
    esac
fi
export SHELL_UNDER_TEST

[ -x "$bin" ] || {
    echo "run.sh: no tokenmint binary at $bin (cargo build --locked, or set TOKENMINT_BIN)" >&2
    exit 1
}
REAL_CURL=$(command -v curl) || {
    echo "run.sh: curl is missing" >&2
    exit 1
}
export REAL_CURL

work=$(mktemp -d "${TMPDIR:-/tmp}/tokenmint-client-test.XXXXXX")
server_pid=
fake_pid=
cleanup() {
    [ -n "$fake_pid" ] && kill "$fake_pid" 2>/dev/null
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null
    if [ "${KEEP_WORK:-0}" = 1 ]; then
        echo "run.sh: work directory kept: $work"
    else
        rm -rf -- "$work"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

NL='
'
passed=0
failed=0
case_name=

# ---- assertions ---------------------------------------------------------------------

begin() {
    case_name=$1
}

ok() {
    passed=$((passed + 1))
    printf 'ok - %s: %s\n' "$case_name" "$1"
}

not_ok() {
    failed=$((failed + 1))
    printf 'not ok - %s: %s\n' "$case_name" "$1"
    if [ -f "$work/err" ]; then
        sed 's/^/    stderr| /' "$work/err"
    fi
}

check() { # DESCRIPTION COMMAND...
    _desc=$1
    shift
    if "$@"; then ok "$_desc"; else not_ok "$_desc"; fi
}

check_eq() { # DESCRIPTION EXPECTED ACTUAL
    if [ "$2" = "$3" ]; then
        ok "$1"
    else
        not_ok "$1"
        printf '    expected: %s\n    actual:   %s\n' "$2" "$3"
    fi
}

check_rc() {
    check_eq "exit status $1" "$1" "$rc"
}

check_stdout_empty() {
    if [ -s "$work/out" ]; then
        not_ok "stdout is empty"
        sed 's/^/    stdout| /' "$work/out"
    else
        ok "stdout is empty"
    fi
}

check_err_line() { # EXACT-LINE: stderr has this line
    if grep -Fxq -- "$1" "$work/err"; then
        ok "stderr has: $1"
    else
        not_ok "stderr has: $1"
    fi
}

check_err_lacks() { # DESCRIPTION STRING
    if grep -Fq -- "$2" "$work/err"; then
        not_ok "$1"
    else
        ok "$1"
    fi
}

# is_jwt S: three non-empty base64url segments.
is_jwt() {
    case $1 in
        *[!A-Za-z0-9_.-]* | *.*.*.* | .* | *..* | *.) return 1 ;;
        ?*.?*.?*) return 0 ;;
    esac
    return 1
}

# jwt_payload S: the decoded payload (the middle segment) on stdout.
jwt_payload() {
    _p=${1#*.}
    _p=${_p%%.*}
    case $((${#_p} % 4)) in
        2) _p="$_p==" ;;
        3) _p="$_p=" ;;
    esac
    printf '%s' "$_p" | tr '_-' '/+' | base64 -d 2>/dev/null
}

# check_service_token S: S is a JWT this test's tokenmint signed for dev-api.
check_service_token() {
    if is_jwt "$1"; then ok "the token is a JWT"; else not_ok "the token is a JWT"; fi
    _payload=$(jwt_payload "$1")
    case $_payload in
        *"\"iss\":\"$base\""*"\"aud\":\"$base/dev-api\""*) ok "the token was issued by the service for dev-api" ;;
        *) not_ok "the token was issued by the service for dev-api (payload: $_payload)" ;;
    esac
    printf '%s\n' "$1" >>"$work/secrets"
}

# ---- the service, the fake curl, the fake server ------------------------------------

mkdir -p "$work/bin" "$work/srv"
# A curl first in PATH that records its arguments (what `ps` would show) and runs the real one.
cat >"$work/bin/curl" <<'EOF'
#!/bin/sh
{
    printf 'curl'
    for a in "$@"; do printf ' [%s]' "$a"; done
    printf '\n'
} >>"${ARGV_LOG:?}"
exec "$REAL_CURL" "$@"
EOF
# The component's script runs `sh CLIENT`: make that the shell under test.
cat >"$work/bin/sh" <<'EOF'
#!/bin/sh
exec $SHELL_UNDER_TEST "$@"
EOF
chmod 755 "$work/bin/curl" "$work/bin/sh"
ARGV_LOG=$work/argv.log
export ARGV_LOG
: >"$ARGV_LOG"
: >"$work/secrets"

(
    cd "$work/srv" || exit 1
    # Dev mode refuses any configuration variable (TOKENMINT_*__*).
    for v in $(env | sed -n 's/^\(TOKENMINT_[A-Za-z0-9_]*__[A-Za-z0-9_]*\)=.*/\1/p'); do
        unset "$v"
    done
    exec "$bin" serve --dev --listen 127.0.0.1:0
) >"$work/server.log" 2>&1 &
server_pid=$!
base=
for _ in $(seq 1 300); do
    base=$(sed -n 's/.*public_url=\(http:\/\/[^ "]*\).*/\1/p' "$work/server.log" | head -n 1)
    [ -n "$base" ] && break
    kill -s 0 "$server_pid" 2>/dev/null || break
    sleep 0.1
done
if [ -z "$base" ]; then
    echo "run.sh: tokenmint serve --dev did not start:" >&2
    cat "$work/server.log" >&2
    exit 1
fi
echo "# tokenmint serve --dev at $base; client under: $SHELL_UNDER_TEST"

# mint CLAIMS-JSON: a dev CI token in $tok.
mint() {
    tok=$("$REAL_CURL" -sS -X POST "$base/dev/ci-token" -H 'content-type: application/json' -d "$1" |
        sed -n 's/^{"token":"\([^"]*\)"}$/\1/p')
    if [ -z "$tok" ]; then
        echo "run.sh: could not mint a dev CI token" >&2
        exit 1
    fi
    printf '%s\n' "$tok" >>"$work/secrets"
}

# fake STEPS-JSON: start the scripted server (relaying "proxy" steps to $base); $fake is
# its base URL, $work/fake.log its request log.
fake() {
    stop_fake
    printf '%s\n' "$1" >"$work/fake.json"
    rm -f "$work/fake.port" "$work/fake.log"
    : >"$work/fake.log"
    python3 "$here/fake_server.py" --script "$work/fake.json" --log "$work/fake.log" \
        --port-file "$work/fake.port" --upstream "$base" 2>>"$work/fake.stderr" &
    fake_pid=$!
    for _ in $(seq 1 100); do
        [ -s "$work/fake.port" ] && break
        sleep 0.1
    done
    [ -s "$work/fake.port" ] || {
        echo "run.sh: the fake server did not start" >&2
        cat "$work/fake.stderr" >&2
        exit 1
    }
    fake=http://127.0.0.1:$(cat "$work/fake.port")
}

stop_fake() {
    if [ -n "$fake_pid" ]; then
        kill "$fake_pid" 2>/dev/null
        wait "$fake_pid" 2>/dev/null
        fake_pid=
    fi
}

fake_requests() {
    grep -c . "$work/fake.log"
}

# run ARGS...: run the client under test; stdout, stderr in $work/out, $work/err; $rc.
run() {
    : >"$work/calls"
    # shellcheck disable=SC2086 # $run_flags: shell options, e.g. -x
    ARGV_LOG=$work/calls PATH="$work/bin:$PATH" $SHELL_UNDER_TEST $run_flags "$client" "$@" >"$work/out" 2>"$work/err"
    rc=$?
    cat "$work/calls" >>"$ARGV_LOG"
}

curl_calls() {
    grep -c '^curl' "$work/calls"
}

# refused DESCRIPTION ARGS...: exit 2, nothing on stdout, curl never called.
refused() {
    _what=$1
    shift
    begin "refuses $_what"
    run "$@"
    check_rc 2
    check_stdout_empty
    check_eq "curl was not called" 0 "$(curl_calls)"
}

unset TOKENMINT_ID_TOKEN
run_flags=''

# ---- success --------------------------------------------------------------------------

begin "bare token"
mint '{"repository":"acme/app","ref":"refs/heads/main"}'
TOKENMINT_ID_TOKEN=$tok
export TOKENMINT_ID_TOKEN
run --url "$base" --audience dev-api
check_rc 0
check_eq "stdout is one line" 1 "$(grep -c . "$work/out")"
access=$(cat "$work/out")
check_service_token "$access"
check_eq "the token has the policy's scopes" '"scope":"read write"' \
    "$(jwt_payload "$access" | grep -o '"scope":"[^"]*"')"
check "stderr names target, policy, scope and request id, never the token" \
    grep -Eq '^tokenmint-exchange\.sh: got a token: target dev-api, policy dev-any-repository, scope "read write", expires in [0-9]+s, request_id [0-9a-f-]{36}$' "$work/err"
check_err_lacks "stderr has no token" "$access"
check_eq "one request" 1 "$(curl_calls)"

begin "--export, eval'd by the shell"
mint '{"repository":"acme/app","ref":"refs/heads/main"}'
TOKENMINT_ID_TOKEN=$tok
run --url "$base/" --audience dev-api --scope read --export MY_TOKEN
check_rc 0
line=$(cat "$work/out")
case $line in
    "export MY_TOKEN='"*"'") ok "stdout is export MY_TOKEN='...'" ;;
    *) not_ok "stdout is export MY_TOKEN='...' (got: $line)" ;;
esac
MY_TOKEN=
eval "$line"
check_service_token "$MY_TOKEN"
check_eq "the token has the requested scope" '"scope":"read"' \
    "$(jwt_payload "$MY_TOKEN" | grep -o '"scope":"[^"]*"')"
check_eq "eval exported it" "$MY_TOKEN" "$(sh -c 'printf %s "$MY_TOKEN"')"
unset MY_TOKEN

begin "--token-var"
unset TOKENMINT_ID_TOKEN
mint '{"repository":"acme/app"}'
SECOND_ID_TOKEN=$tok
export SECOND_ID_TOKEN
run --url "$base" --audience dev-api --token-var SECOND_ID_TOKEN --policy dev-any-repository
check_rc 0
check_service_token "$(cat "$work/out")"
unset SECOND_ID_TOKEN

begin "loopback by name"
mint '{"repository":"acme/app"}'
TOKENMINT_ID_TOKEN=$tok
export TOKENMINT_ID_TOKEN
run --url "$(printf '%s' "$base" | sed 's|127\.0\.0\.1|localhost|')" --audience dev-api
check_rc 0
check_service_token "$(cat "$work/out")"

begin "a trace (sh -x) does not print the tokens"
mint '{"repository":"acme/app"}'
TOKENMINT_ID_TOKEN=$tok
run_flags=-x
run --url "$base" --audience dev-api --export MY_TOKEN
run_flags=''
check_rc 0
check_service_token "$(sed -n "s/^export MY_TOKEN='\\(.*\\)'$/\\1/p" "$work/out")"
check_err_lacks "stderr has no CI token" "$tok"
check_err_lacks "stderr has no access token" "$(sed -n "s/^export MY_TOKEN='\\(.*\\)'$/\\1/p" "$work/out")"

begin "the request"
mint '{"repository":"acme/app"}'
TOKENMINT_ID_TOKEN=$tok
fake '[{"proxy": true}]'
run --url "$fake" --audience dev-api --scope 'read write' --policy dev-any-repository
check_rc 0
check_service_token "$(cat "$work/out")"
check "POST /token" grep -Fq '"path": "/token"' "$work/fake.log"
check "User-Agent names the client and its version" \
    grep -Fq '"user-agent": "tokenmint-exchange.sh/0.1.0 (sh; curl)"' "$work/fake.log"
check "the form body, URL-encoded" grep -Fq \
    "\"body\": \"grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aid_token&audience=dev-api&scope=read%20write&policy=dev-any-repository&subject_token=$tok\"" \
    "$work/fake.log"
check "Content-Type is form" grep -Fq '"content-type": "application/x-www-form-urlencoded"' "$work/fake.log"

begin "URL-encoding"
fake '[{"status": 200, "body": "{\"access_token\":\"abc\"}"}]'
TOKENMINT_ID_TOKEN='a+b/c=d~e'
run --url "$fake" --audience 'https://api.example/x?y=1&z' --scope 'a:b é%'
check_rc 0
check "every reserved byte is %XX" grep -Fq \
    '&audience=https%3A%2F%2Fapi.example%2Fx%3Fy%3D1%26z&scope=a%3Ab%20%C3%A9%25&subject_token=a%2Bb%2Fc%3Dd~e"' \
    "$work/fake.log"

# ---- denial and errors ------------------------------------------------------------------

begin "denial"
mint '{"ref":"refs/heads/main"}'
TOKENMINT_ID_TOKEN=$tok
run --url "$base" --audience dev-api
check_rc 1
check_stdout_empty
check_err_line 'tokenmint-exchange.sh: the exchange failed with HTTP 403'
check_err_line '  error: access_denied'
check_err_line '  error_description: no trust policy for target "dev-api" matches this workload'
rid=$(sed -n 's/^  request_id: //p' "$work/err")
check "the request id is the one the service audited as a denial" \
    grep -Eq "request_id=$rid outcome=\"deny\"" "$work/server.log"
check_eq "no retry on 403" 1 "$(curl_calls)"

begin "invalid scope"
mint '{"repository":"acme/app"}'
TOKENMINT_ID_TOKEN=$tok
run --url "$base" --audience dev-api --scope 'read admin'
check_rc 1
check_stdout_empty
check_err_line 'tokenmint-exchange.sh: the exchange failed with HTTP 400'
check_err_line '  error: invalid_scope'
check_err_line '  error_description: the requested scope exceeds every matching policy'

begin "a used CI token"
mint '{"repository":"acme/app"}'
TOKENMINT_ID_TOKEN=$tok
run --url "$base" --audience dev-api
check_rc 0
run --url "$base" --audience dev-api
check_rc 1
check_err_line '  error: invalid_grant'
check_err_line '  error_description: the subject token was already used'

begin "JSON escapes in an error"
fake '[{"status": 400, "body": "{\"error_description\":\"say \\\"hi\\\" \\\\ a\\/b \\u00e9 \\ud83d\\ude00 \\u001b[31m\\tx\",\"error\":\"invalid_request\",\"request_id\":\"r-1\",\"extra\":{\"a\":[1,\"}\\\"]\",{}],\"b\":null},\"n\":-1.5e3}"}]'
TOKENMINT_ID_TOKEN=abc
run --url "$fake" --audience dev-api
check_rc 1
check_stdout_empty
check_err_line '  error: invalid_request'
check_err_line "  error_description: say \"hi\" \\ a/b é 😀 ?[31m	x"
check_err_line '  request_id: r-1'

begin "JSON escapes in a token"
fake '[{"status": 200, "body": " {\"nested\":{\"access_token\":\"no\"}, \"access_token\" : \"ab\\/c\\u002bd\" , \"expires_in\":5}\n"}]'
run --url "$fake" --audience dev-api
check_rc 0
check_eq "the top-level access_token, unescaped" 'ab/c+d' "$(cat "$work/out")"

begin "a body that is not JSON"
fake '[{"status": 502, "content_type": "text/html", "headers": {"X-Request-Id": "proxy-7"}, "body": "<html>bad gateway</html>"}]'
run --url "$fake" --audience dev-api --retries 0
check_rc 1
check_stdout_empty
check_err_line 'tokenmint-exchange.sh: the exchange failed with HTTP 502'
check_err_line '  the body is not a tokenmint error (content-type: text/html)'
check_err_line '  request_id: proxy-7'

begin "a 200 that is not JSON"
fake '[{"status": 200, "body": "{\"access_token\":\"abc\""}]'
run --url "$fake" --audience dev-api
check_rc 1
check_stdout_empty
check_err_line 'tokenmint-exchange.sh: HTTP 200, but the body is not a JSON object'

begin "a repeated access_token"
fake '[{"status": 200, "body": "{\"access_token\":\"abc\",\"access_token\":\"def\"}"}]'
run --url "$fake" --audience dev-api
check_rc 1
check_stdout_empty

begin "an access token with a quote"
fake '[{"status": 200, "body": "{\"access_token\":\"abc'"'"'; id; echo '"'"'\"}"}]'
run --url "$fake" --audience dev-api --export X
check_rc 2
check_stdout_empty
check_err_line 'tokenmint-exchange.sh: the service returned an access token with characters outside [A-Za-z0-9._~+/=-]; not printing it'

begin "an access token with a newline"
fake '[{"status": 200, "body": "{\"access_token\":\"abc\\ndef\"}"}]'
run --url "$fake" --audience dev-api
check_rc 2
check_stdout_empty

# Review finding 4: access_token must be a JSON string; other scalars must be JSON.
for bad in '{\"access_token\":null,\"error\":\"server_error\"}' '{\"access_token\":12345}' \
    '{\"access_token\":true}' '{\"access_token\":e-e+}' '{\"x\":[1,2}, \"access_token\":\"tok\"}' \
    '{\"n\":01,\"access_token\":\"tok\"}'; do
    begin "a 200 with $bad"
    fake "[{\"status\": 200, \"body\": \"$bad\"}]"
    run --url "$fake" --audience dev-api --export T
    check_rc 1
    check_stdout_empty
done
check_err_line 'tokenmint-exchange.sh: HTTP 200, but the body is not a JSON object'

begin "a 200 whose access_token is null"
fake '[{"status": 200, "body": "{\"access_token\":null}"}]'
run --url "$fake" --audience dev-api
check_rc 1
check_stdout_empty
check_err_line 'tokenmint-exchange.sh: HTTP 200, but access_token in the response has the wrong JSON type (access_token must be a string)'

begin "null members are absent; nested values and numbers are skipped"
fake '[{"status": 200, "body": "{\"x\":[1,{\"a\":[]}],\"n\":-1.5e3,\"scope\":null,\"access_token\":\"tok\",\"expires_in\":60}"}]'
run --url "$fake" --audience dev-api
check_rc 0
check_eq "the token" tok "$(cat "$work/out")"

# Review finding 1: "##[" anywhere in a line is a GitHub workflow command; "##[stop-commands]"
# would leave a later `::add-mask::` line unprocessed, showing the token.
begin "server text cannot carry a ##[ workflow command"
mint '{"repository":"acme/app"}'
TOKENMINT_ID_TOKEN=$tok
fake '[{"status": 503, "headers": {"Retry-After": "1", "X-Request-Id": "##[stop-commands]y"}, "body": "{\"error\":\"temporarily_unavailable\",\"error_description\":\"##[stop-commands]x ###[z\"}"},
       {"proxy": true}]'
run --url "$fake" --audience dev-api
check_rc 0
check_service_token "$(cat "$work/out")"
check_err_lacks "stderr has no ##[" '##['
check_err_line '  error_description: #?[stop-commands]x ##?[z'
check_err_line '  request_id: #?[stop-commands]y'

# Review finding 9: answers are capped at 64 KiB, and long error texts stay quick.
for how in '' ', "no_length": true'; do
    begin "a 200 over 64 KiB${how:+ without a Content-Length}"
    fake "[{\"status\": 200, \"body\": \"{\\\"access_token\\\":\\\"tok\\\",\\\"pad\\\":\\\"$(printf '%070000d' 0)\\\"}\"$how}]"
    run --url "$fake" --audience dev-api
    check_rc 1
    check_stdout_empty
    check_err_line "tokenmint-exchange.sh: the answer from $fake/token is larger than 64 KiB (HTTP 200): not a tokenmint answer"
done

begin "a long error answer is quick, and its text is cut to 1 KiB"
long=$(printf '%06000d' 0 | sed 's/0/a\\\\\\\\n/g')
fake "[{\"status\": 400, \"body\": \"{\\\"error\\\":\\\"invalid_request\\\",\\\"error_description\\\":\\\"$long\\\"}\"},
       {\"status\": 400, \"body\": \"{\\\"error\\\":\\\"invalid_request\\\",\\\"error_description\\\":\\\"$(printf '%02000d' 0)\\\"}\"}]"
started=$(date +%s)
run --url "$fake" --audience dev-api
elapsed=$(($(date +%s) - started))
check_rc 1
check "it took ${elapsed}s, under 5s" [ "$elapsed" -lt 5 ]
check_err_line '  the body is not a tokenmint error (content-type: application/json)'
run --url "$fake" --audience dev-api
check_rc 1
check_err_line "  error_description: $(printf '%01024d' 0)..."

# ---- retries ----------------------------------------------------------------------------

begin "retry after 503 and 429 with Retry-After"
mint '{"repository":"acme/app"}'
TOKENMINT_ID_TOKEN=$tok
fake '[{"status": 503, "headers": {"Retry-After": "1"}, "body": "{\"error\":\"temporarily_unavailable\",\"error_description\":\"overloaded\",\"request_id\":\"f-1\"}"},
       {"status": 429, "headers": {"Retry-After": "1"}, "body": "{\"error\":\"slow_down\",\"error_description\":\"too many\",\"request_id\":\"f-2\"}"},
       {"proxy": true}]'
started=$(date +%s)
run --url "$fake" --audience dev-api
elapsed=$(($(date +%s) - started))
check_rc 0
check_service_token "$(cat "$work/out")"
check_eq "three requests" 3 "$(fake_requests)"
check_err_line 'tokenmint-exchange.sh: the exchange failed with HTTP 503; retrying in 1s (attempt 2 of 4)'
check_err_line '  error_description: overloaded'
check_err_line 'tokenmint-exchange.sh: the exchange failed with HTTP 429; retrying in 1s (attempt 3 of 4)'
check_err_line '  request_id: f-2'
check "it waited the Retry-After seconds (${elapsed}s)" [ "$elapsed" -ge 2 ]
check_eq "the same CI token every time" 1 \
    "$(sed -n 's/.*"body": "\([^"]*\)".*/\1/p' "$work/fake.log" | sort -u | grep -c .)"

begin "retries run out"
fake '[{"status": 503, "headers": {"Retry-After": "1"}, "body": "{\"error\":\"temporarily_unavailable\",\"error_description\":\"overloaded\",\"request_id\":\"f-3\"}"}]'
TOKENMINT_ID_TOKEN=abc
run --url "$fake" --audience dev-api --retries 1
check_rc 1
check_stdout_empty
check_eq "two requests" 2 "$(fake_requests)"
check_err_line 'tokenmint-exchange.sh: the exchange failed with HTTP 503'
check_err_line '  error: temporarily_unavailable'
check_err_line '  request_id: f-3'

begin "a Retry-After too long to wait"
fake '[{"status": 503, "headers": {"Retry-After": "3600"}, "body": "{\"error\":\"temporarily_unavailable\",\"request_id\":\"f-4\"}"}]'
run --url "$fake" --audience dev-api
check_rc 1
check_eq "one request" 1 "$(fake_requests)"
check_err_line 'tokenmint-exchange.sh: the exchange failed with HTTP 503; the service asks to wait 3600s (Retry-After), more than 60s: giving up'
stop_fake

begin "retry after a connection failure"
run --url http://127.0.0.1:1 --audience dev-api --retries 1
check_rc 1
check_stdout_empty
check_eq "two attempts" 2 "$(curl_calls)"
check_err_line 'tokenmint-exchange.sh: could not complete the request to http://127.0.0.1:1/token (curl exit 7); retrying in 1s (attempt 2 of 2)'
check_err_line 'tokenmint-exchange.sh: could not complete the request to http://127.0.0.1:1/token (curl exit 7)'

# Review finding 6: a leading zero made sh arithmetic fail at the first retry.
begin "--retries 08"
fake '[{"status": 503, "headers": {"Retry-After": "1"}, "body": "{\"error\":\"temporarily_unavailable\"}"},
       {"status": 400, "body": "{\"error\":\"invalid_request\"}"}]'
TOKENMINT_ID_TOKEN=abc
run --url "$fake" --audience dev-api --retries 08
check_rc 1
check_eq "two requests" 2 "$(fake_requests)"
check_err_line 'tokenmint-exchange.sh: the exchange failed with HTTP 503; retrying in 1s (attempt 2 of 9)'
check_err_line '  error: invalid_request'
stop_fake

# Review finding 7: curl's URL globbing is off, and braces and brackets are refused.
begin "curl runs with --globoff"
run --url http://127.0.0.1:1 --audience dev-api --retries 0
check "--globoff and --max-filesize are passed" grep -Fq ' [--globoff] [--max-filesize] [65536] ' "$work/calls"

begin "[::1] is loopback"
run --url 'http://[::1]:1' --audience dev-api --retries 0
check_eq "not refused: it tried (exit 1)" 1 "$rc"

# ---- refusals -----------------------------------------------------------------------

TOKENMINT_ID_TOKEN=abc.def.ghi
refused "an export name starting with a digit" --url "$base" --audience dev-api --export 1TOKEN
check_err_line 'tokenmint-exchange.sh: --export "1TOKEN" is not a variable name ([A-Za-z_][A-Za-z0-9_]*)'
refused "an export name with a dash" --url "$base" --audience dev-api --export MY-TOKEN
refused "an export name with shell code" --url "$base" --audience dev-api --export 'X;id'
refused "an empty export name" --url "$base" --audience dev-api --export ''
refused "a token-var with shell code" --url "$base" --audience dev-api --token-var 'X;id'
check_err_line 'tokenmint-exchange.sh: --token-var "X;id" is not a variable name ([A-Za-z_][A-Za-z0-9_]*)'
refused "a token-var with a brace" --url "$base" --audience dev-api --token-var 'PATH}'
refused "a token-var starting with a digit" --url "$base" --audience dev-api --token-var 9X

TOKENMINT_ID_TOKEN="abc'def"
refused "a CI token with a quote" --url "$base" --audience dev-api
check_err_line 'tokenmint-exchange.sh: $TOKENMINT_ID_TOKEN holds characters outside [A-Za-z0-9._~+/=-]; it is not a CI token (not shown)'
check_err_lacks "the bad token is not shown" "abc'def"
TOKENMINT_ID_TOKEN="abc${NL}def"
refused "a CI token with a newline" --url "$base" --audience dev-api
TOKENMINT_ID_TOKEN='abc $(id)'
refused "a CI token with a space and shell code" --url "$base" --audience dev-api
TOKENMINT_ID_TOKEN=
refused "an empty CI token" --url "$base" --audience dev-api
check_err_line 'tokenmint-exchange.sh: $TOKENMINT_ID_TOKEN is empty or unset: declare it in the job (GitLab: id_tokens: TOKENMINT_ID_TOKEN: aud: ...)'
unset TOKENMINT_ID_TOKEN
refused "an unset CI token" --url "$base" --audience dev-api
TOKENMINT_ID_TOKEN=abc.def.ghi
export TOKENMINT_ID_TOKEN

refused "http:// to a remote host" --url http://sts.example.com --audience dev-api
check_err_line 'tokenmint-exchange.sh: refusing http:// to sts.example.com, which is not a loopback host: the CI token and the access token would cross the network in clear text; use https://'
refused "http:// to a name starting 127." --url http://127.0.0.1.nip.io:8080 --audience dev-api
refused "http:// to a name starting localhost." --url http://localhost.example.com --audience dev-api
refused "http:// to 127.0.0.256" --url http://127.0.0.256 --audience dev-api
refused "http:// to another IPv6 host" --url 'http://[::2]:8080' --audience dev-api
refused "http:// to 0.0.0.0" --url http://0.0.0.0:8080 --audience dev-api
refused "credentials in the URL" --url 'https://user:pw@sts.example.com' --audience dev-api
refused "a URL with a query" --url 'https://sts.example.com/?x=1' --audience dev-api
refused "a URL with braces (curl globbing)" --url "http://127.0.0.1:1/{a,b}" --audience dev-api
check_err_line 'tokenmint-exchange.sh: --url has a brace or bracket outside a [IPv6] host'
refused "a host with braces" --url 'https://{a.example,b.example}' --audience dev-api
refused "brackets in the path" --url 'https://sts.example.com/[1-2]' --audience dev-api
refused "braces in an IPv6 host" --url 'http://[::1{,2}]:1' --audience dev-api
refused "a URL with a space" --url 'https://sts.example.com/ x' --audience dev-api
refused "another scheme" --url ftp://sts.example.com --audience dev-api
refused "no --url" --audience dev-api
refused "no --audience" --url "$base"
refused "--retries 11" --url "$base" --audience dev-api --retries 11
refused "an unknown option, without showing its value" --url "$base" --audience dev-api --token=abc.secret.xyz
check_err_line 'tokenmint-exchange.sh: unknown option --token (see --help)'
check_err_lacks "the value is not shown" "abc.secret.xyz"
refused "a stray argument, without showing it" --url "$base" --audience dev-api abc.secret.xyz
check_err_lacks "the argument is not shown" "abc.secret.xyz"

# ---- the GitLab component's job script ------------------------------------------------

# input_default NAME: the default of spec:inputs:NAME in the template.
input_default() {
    awk -v name="$1" '
        /^  inputs:$/ { inputs = 1; next }
        inputs && /^---$/ { exit }
        inputs && /^    [a-z0-9-]+:$/ { current = substr($1, 1, length($1) - 1); next }
        inputs && current == name && /^      default: / {
            v = substr($0, index($0, "default: ") + 9)
            if (v == "\"\"") v = ""
            print v; found = 1; exit
        }
        END { if (!found) exit 1 }
    ' "$template"
}

# interpolate S INPUT=VALUE...: replace $[[ inputs.X ]] in S as GitLab does, from the
# given inputs, else the template's defaults; the result in $interpolated.
interpolate() {
    _s=$1
    shift
    interpolated=
    while :; do
        case $_s in
            *'$[[ inputs.'*' ]]'*) ;;
            *) break ;;
        esac
        interpolated=$interpolated${_s%%'$[[ inputs.'*}
        _s=${_s#*'$[[ inputs.'}
        _name=${_s%%' ]]'*}
        _s=${_s#*' ]]'}
        _found=0
        for _kv in "$@"; do
            case $_kv in
                "$_name="*)
                    interpolated=$interpolated${_kv#*=}
                    _found=1
                    ;;
            esac
        done
        if [ "$_found" = 0 ]; then
            _default=$(input_default "$_name") || {
                echo "run.sh: the template uses input $_name, which has no default and was not given" >&2
                exit 1
            }
            interpolated=$interpolated$_default
        fi
    done
    interpolated=$interpolated$_s
}

# job_script INPUT=VALUE...: the hidden job as a shell script in $work/job.sh, the way a
# runner would run it: its variables exported (GitLab expands $VAR in them; these have
# none), TOKENMINT_ID_TOKEN from $job_id_token, the before_script, then $job_tail.
# $job_aud: the id_tokens aud after interpolation and GitLab's variable expansion.
job_script() {
    {
        awk '/^  variables:$/ { v = 1; next } v && !/^    / { exit } v' "$template" |
            while IFS= read -r _line; do
                _key=${_line%%:*}
                _key=${_key#    }
                _value=${_line#*: \"}
                _value=${_value%\"}
                interpolate "$_value" "$@"
                case $interpolated in *"'"*)
                    echo "run.sh: a quote in $_key" >&2
                    exit 1
                    ;;
                esac
                printf "%s='%s'; export %s\n" "$_key" "$interpolated" "$_key"
            done
        printf "TOKENMINT_ID_TOKEN='%s'; export TOKENMINT_ID_TOKEN\n" "$job_id_token"
        [ "$job_trace" = 1 ] && echo 'set -x'
        awk '
            /^  before_script:$/ { b = 1; next }
            b && /^    - \|$/ { s = 1; next }
            s && /^      / { print substr($0, 7); next }
            s && /^$/ { print ""; next }
            s { exit }
        ' "$template"
        printf '%s\n' "$job_tail"
    } >"$work/job.sh"
    _aud=$(awk '/^  id_tokens:$/ { i = 1; next } i && /^      aud: / { sub(/^      aud: /, ""); gsub(/"/, ""); print; exit }' "$template")
    interpolate "$_aud" "$@"
    job_aud=$interpolated
    case $job_aud in
        '$'[A-Za-z_]*)
            _var=${job_aud#\$}
            job_aud=$(grep "^$_var=" "$work/job.sh" | sed "s/^$_var='\([^']*\)'.*/\1/")
            ;;
    esac
}

# run_job: run $work/job.sh in $work/project under the shell under test.
run_job() {
    : >"$work/calls"
    (cd "$work/project" && ARGV_LOG=$work/calls PATH="$work/bin:$PATH" $SHELL_UNDER_TEST "$work/job.sh") \
        >"$work/out" 2>"$work/err"
    rc=$?
    cat "$work/calls" >>"$ARGV_LOG"
}

mkdir -p "$work/project/.gitlab"
cp "$client" "$work/project/.gitlab/tokenmint-exchange.sh"

begin "component: the pinned client"
pinned=$(input_default client-sha256)
actual=$(sha256sum <"$client")
actual=${actual%% *}
check_eq "client-sha256's default is the SHA-256 of clients/tokenmint-exchange.sh" "$actual" "$pinned"

begin "component: oidc-aud defaults to url"
job_id_token='' job_tail='' job_trace=0
job_script url="$base" audience=dev-api
check_eq "the ID token's aud is the url input" "$base" "$job_aud"
job_script url="$base" audience=dev-api oidc-aud=https://sts.example.com
check_eq "an oidc-aud input wins" https://sts.example.com "$job_aud"

begin "component: the job gets a token"
job_script url="$base" audience=dev-api
mint "{\"repository\":\"acme/app\",\"aud\":\"$job_aud\"}"
job_id_token=$tok
mint "{\"repository\":\"acme/app\",\"aud\":\"$job_aud\"}"
second_id_token=$tok
# A second target, as the README shows: its own id_tokens entry, the checked client again.
job_tail="SECOND_ID_TOKEN='$second_id_token'; export SECOND_ID_TOKEN
second=\$(sh \"\$TOKENMINT_CLIENT\" --url \"\$TOKENMINT_URL\" --audience dev-api --scope read \\
  --token-var SECOND_ID_TOKEN --export SECOND_TOKEN) || exit 1
eval \"\$second\"
printf '%s\n' \"\$AUTH0_API_TOKEN\" >\"$work/job.token\"
printf '%s\n' \"\$SECOND_TOKEN\" >\"$work/job.second\"
printf 'client: %s\n' \"\$TOKENMINT_CLIENT\""
job_script url="$base" audience=dev-api
run_job
check_rc 0
check_service_token "$(cat "$work/job.token" 2>/dev/null)"
check_service_token "$(cat "$work/job.second" 2>/dev/null)"
check "two different tokens" [ "$(cat "$work/job.token")" != "$(cat "$work/job.second")" ]
check_eq "the job log shows no token; TOKENMINT_CLIENT is the checked client" \
    "client: .gitlab/tokenmint-exchange.sh" "$(cat "$work/out")"
check_err_lacks "stderr has no token" "$(cat "$work/job.token")"

begin "component: a trace (CI_DEBUG_TRACE) does not print the tokens"
mint "{\"repository\":\"acme/app\",\"aud\":\"$job_aud\"}"
job_id_token=$tok
job_tail="printenv AUTH0_API_TOKEN >\"$work/job.token\""
job_trace=1
job_script url="$base" audience=dev-api
job_trace=0
run_job
check_rc 0
check_service_token "$(cat "$work/job.token" 2>/dev/null)"
check "the trace was on" grep -q '^+ ' "$work/err"
check_err_lacks "the trace has no access token" "$(cat "$work/job.token")"
check_err_lacks "the trace has no CI token" "$tok"

begin "component: a denial fails the job"
mint "{\"ref\":\"main\",\"aud\":\"$job_aud\"}"
job_id_token=$tok
job_tail='echo "script ran"'
job_script url="$base" audience=dev-api
run_job
check_rc 1
check_stdout_empty
check_err_line '  error: access_denied'
check_err_line 'tokenmint: no access token; the service'"'"'s answer is above'

begin "component: a client that is not the pinned one"
printf '# changed\n' >>"$work/project/.gitlab/tokenmint-exchange.sh"
mint "{\"repository\":\"acme/app\",\"aud\":\"$job_aud\"}"
job_id_token=$tok
run_job
check_rc 1
check_stdout_empty
check "stderr says the SHA-256 differs" grep -q '^tokenmint: .gitlab/tokenmint-exchange.sh has SHA-256 [0-9a-f]*, but this component version runs only '"$pinned"': use the client of the version you include$' "$work/err"
check_eq "the client was not run" 0 "$(curl_calls)"
rm "$work/project/.gitlab/tokenmint-exchange.sh"

begin "component: no client"
run_job
check_rc 1
check "stderr says where to put it" grep -q '^tokenmint: no client at .gitlab/tokenmint-exchange.sh: vendor ' "$work/err"

# ---- what ps would have shown -----------------------------------------------------------

begin "no token on any command line"
check "curl was called through the recording wrapper" grep -q '^curl ' "$ARGV_LOG"
check "curl read the body from stdin" grep -Fq ' [--data] [@-] ' "$ARGV_LOG"
leaks=0
while IFS= read -r secret; do
    [ -n "$secret" ] || continue
    if grep -Fq -- "$secret" "$ARGV_LOG"; then
        leaks=$((leaks + 1))
    fi
done <"$work/secrets"
check_eq "none of the $(grep -c . "$work/secrets") CI and access tokens is in curl's argv" 0 "$leaks"

stop_fake
echo "# $passed passed, $failed failed (client under $SHELL_UNDER_TEST)"
[ "$failed" = 0 ]
