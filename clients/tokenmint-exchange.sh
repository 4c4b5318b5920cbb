#!/bin/sh
# tokenmint-exchange.sh: exchange a CI job's OIDC token for a short-lived access token at a
# tokenmint service (RFC 8693 token exchange), needing only a POSIX sh and curl.
#
# Usage: tokenmint-exchange.sh --url URL --audience T [--scope S] [--policy P]
#                              [--token-var NAME] [--export NAME] [--retries N]
#
# Exit status: 0 the token is on stdout; 1 the exchange failed (the service's error, its
# description and the request id are on stderr); 2 refused: bad usage, a NAME or token
# outside the allowed characters, or an insecure URL. Nothing but the result ever goes to
# stdout, and nothing at all on exit 1 or 2.
#
# Tokens never appear on a command line (which `ps` shows): the form body reaches curl on
# its standard input from a here-document, and shells build here-documents themselves.
#
# The JSON reader below is a small parser of one JSON object. It decodes string escapes
# (\" \\ \/ \b \f \n \r \t \uXXXX, surrogate pairs included, to UTF-8), skips nested values,
# and rejects anything that is not a single object. Limits: control characters and U+0000
# decode to "?" (these strings are only printed to stderr or checked against the token
# alphabet), and numbers are kept as their text.

# shellcheck disable=SC2295 # $WS, $TAB and $CTRL are sets of characters in [...] patterns

set +x # a trace (sh -x) would print the tokens
LC_ALL=C
export LC_ALL
umask 077
set -u

PROG=tokenmint-exchange.sh
VERSION=0.1.0
USER_AGENT="tokenmint-exchange.sh/$VERSION (sh; curl)"
MAX_WAIT=60  # seconds; a longer Retry-After ends the retries instead of stalling the job
MAX_BACKOFF=16  # seconds; the longest wait of the client's own backoff
MAX_BODY=65536  # bytes; a longer answer is a failure (tokenmint's are a few KiB)
MAX_ERROR_BODY=16384  # bytes; a longer error answer is not parsed, only its status shown

NL='
'
TAB='	'
CR=$(printf '\r')
WS=" $TAB$CR$NL"
# 1024 "?": a pattern of the first 1 KiB, for sanitize().
KIB='????????????????'
KIB=$KIB$KIB$KIB$KIB
KIB=$KIB$KIB$KIB$KIB
KIB=$KIB$KIB$KIB$KIB
# Every control character but tab and newline, for sanitize().
CTRL=$(printf '\001\002\003\004\005\006\007\010\013\014\015\016\017\020\021\022\023\024\025\026\027\030\031\032\033\034\035\036\037\177')

usage() {
    cat <<EOF
Usage: $PROG --url URL --audience T [--scope S] [--policy P]
                             [--token-var NAME] [--export NAME] [--retries N]

Exchange the CI job's OIDC token for a short-lived access token at a tokenmint service.

  --url URL         the service's base URL: https://, or http:// to a loopback host only
  --audience T      the target name, or a target's audience URL
  --scope S         space-separated scopes to request (default: what the policy grants)
  --policy P        pin the trust policy to use
  --token-var NAME  the variable holding the CI token (default: TOKENMINT_ID_TOKEN)
  --export NAME     print "export NAME='<token>'" for eval, instead of the bare token
  --retries N       retries on 429, 5xx and connection failures (default: 3, at most 10)
  -h, --help        this help;  --version  the version

Exit status: 0 token printed; 1 the exchange failed (the service's error on stderr);
2 refused (bad usage, a name or token with disallowed characters, an insecure URL).
EOF
}

# refuse MESSAGE: exit 2, saying why on stderr.
refuse() {
    printf '%s: %s\n' "$PROG" "$1" >&2
    exit 2
}

# fail MESSAGE: exit 1, saying why on stderr.
fail() {
    printf '%s: %s\n' "$PROG" "$1" >&2
    exit 1
}

say() {
    printf '%s: %s\n' "$PROG" "$1" >&2
}

# valid_name S: S is a shell variable name, [A-Za-z_][A-Za-z0-9_]*.
valid_name() {
    case $1 in
        '' | [!A-Za-z_]* | *[!A-Za-z0-9_]*) return 1 ;;
    esac
    return 0
}

# valid_token S: S is non-empty and only [A-Za-z0-9._~+/=-].
valid_token() {
    case $1 in
        '' | *[!A-Za-z0-9._~+/=-]*) return 1 ;;
    esac
    return 0
}

# sanitize S: sets $clean to S cut to 1 KiB, with every control character but tab and
# newline made "?", and every "##[" written "#?[", so that nothing the service says can
# drive the terminal or the CI log: GitHub's runner takes "##[" anywhere in a line of
# stdout or stderr as a workflow command, and "##[stop-commands]" would leave a later
# `::add-mask::` line unprocessed, so the token it names in clear.
sanitize() {
    clean=
    _s=$1
    if [ "${#_s}" -gt 1024 ]; then
        _rest=${_s#$KIB}
        _s="${_s%%"$_rest"}..."
    fi
    while :; do
        _pre=${_s%%[$CTRL]*}
        clean=$clean$_pre
        [ "$_pre" = "$_s" ] && break
        _s=${_s#"$_pre"}
        _s=${_s#?}
        clean="$clean?"
    done
    _s=$clean
    clean=
    while :; do
        _pre=${_s%%'##['*}
        clean=$clean$_pre
        [ "$_pre" = "$_s" ] && return 0
        _s=${_s#"$_pre"}
        _s=${_s#'##['}
        clean="$clean#?["
    done
}

# urlencode S: sets $enc to S encoded for application/x-www-form-urlencoded (every byte but
# the RFC 3986 unreserved ones as %XX; "+" and "/" and "=" in tokens included).
urlencode() {
    enc=
    _s=$1
    while [ -n "$_s" ]; do
        _pre=${_s%%[!A-Za-z0-9._~-]*}
        enc=$enc$_pre
        _s=${_s#"$_pre"}
        [ -z "$_s" ] && break
        _rest=${_s#?}
        _c=${_s%"$_rest"}
        _s=$_rest
        enc=$enc$(printf '%%%02X' "'$_c")
    done
}

# is_loopback HOST: 127.0.0.0/8 as a dotted quad, ::1, or localhost.
is_loopback() {
    case $1 in
        [Ll][Oo][Cc][Aa][Ll][Hh][Oo][Ss][Tt] | ::1) return 0 ;;
        127.*) ;;
        *) return 1 ;;
    esac
    _rest=${1#127.}
    for _i in 1 2 3; do
        if [ "$_i" = 3 ]; then
            _octet=$_rest
        else
            case $_rest in *.*) ;; *) return 1 ;; esac
            _octet=${_rest%%.*}
            _rest=${_rest#*.}
        fi
        case $_octet in
            '' | *[!0-9]* | ????*) return 1 ;;
        esac
        [ "$_octet" -le 255 ] || return 1
    done
    return 0
}

# check_url: validate $url; set $endpoint and $loopback.
check_url() {
    case $url in
        *[!!-~]*) refuse "--url has a space, control or non-ASCII character" ;;
    esac
    case $url in
        https://*) _scheme=https _rest=${url#https://} ;;
        http://*) _scheme=http _rest=${url#http://} ;;
        *) refuse "--url must start with https:// (or http:// to a loopback host)" ;;
    esac
    case $_rest in
        *[?#]*) refuse "--url must not have a query or a fragment: give the service's base URL" ;;
    esac
    _authority=${_rest%%/*}
    case $_authority in
        '') refuse "--url has no host" ;;
        *@*) refuse "--url must not carry credentials: they would show in ps and in logs" ;;
    esac
    # curl runs with --globoff, and {} [] are refused outside a bracketed IPv6 host anyway,
    # so that curl and this check read the URL alike.
    case $_authority in
        \[*) _outside=${_authority#*\]}${_rest#"$_authority"} ;;
        *) _outside=$_rest ;;
    esac
    case $_outside in
        *[][{}]*) refuse "--url has a brace or bracket outside a [IPv6] host" ;;
    esac
    case $_authority in
        \[*\] | \[*\]:*)
            _host=${_authority#\[}
            _host=${_host%%\]*}
            _port=${_authority#*\]}
            case $_host in
                *[!0-9A-Fa-f:.]*) refuse "--url has a bad [IPv6] host" ;;
            esac
            ;;
        \[*) refuse "--url has an unterminated [IPv6] host" ;;
        *:*:*) refuse "--url has an IPv6 host without [brackets]" ;;
        *)
            _host=${_authority%%:*}
            _port=${_authority#"$_host"}
            ;;
    esac
    case $_port in
        '') ;;
        :*[!0-9]* | :) refuse "--url has a bad port" ;;
        :*) ;;
        *) refuse "--url has a bad host" ;;
    esac
    [ -n "$_host" ] || refuse "--url has no host"
    loopback=0
    if is_loopback "$_host"; then
        loopback=1
    elif [ "$_scheme" = http ]; then
        refuse "refusing http:// to $_host, which is not a loopback host: the CI token and the access token would cross the network in clear text; use https://"
    fi
    # The base URL, without trailing slashes, then /token.
    _base=$url
    while :; do
        case $_base in
            */) _base=${_base%/} ;;
            *) break ;;
        esac
    done
    endpoint=$_base/token
}

# ---- JSON -------------------------------------------------------------------------------

# js_ws: drop leading whitespace from $js.
js_ws() {
    js=${js#"${js%%[!$WS]*}"}
}

# js_byte N: append the byte N (decimal) to $jstr.
js_byte() {
    # shellcheck disable=SC2059 # the format is the octal escape of one byte
    jstr=$jstr$(printf "\\$(printf '%03o' "$1")")
}

# js_codepoint N: append code point N to $jstr as UTF-8.
js_codepoint() {
    _cp=$1
    if [ "$_cp" -eq 10 ]; then
        jstr=$jstr$NL
    elif [ "$_cp" -eq 9 ]; then
        jstr=$jstr$TAB
    elif [ "$_cp" -lt 32 ] || [ "$_cp" -eq 127 ]; then
        jstr="$jstr?"
    elif [ "$_cp" -lt 128 ]; then
        js_byte "$_cp"
    elif [ "$_cp" -lt 2048 ]; then
        js_byte $((192 + _cp / 64))
        js_byte $((128 + _cp % 64))
    elif [ "$_cp" -lt 65536 ]; then
        js_byte $((224 + _cp / 4096))
        js_byte $((128 + _cp / 64 % 64))
        js_byte $((128 + _cp % 64))
    else
        js_byte $((240 + _cp / 262144))
        js_byte $((128 + _cp / 4096 % 64))
        js_byte $((128 + _cp / 64 % 64))
        js_byte $((128 + _cp % 64))
    fi
}

# js_hex4: read 4 hex digits from $js into $_hex (as a number); fail otherwise.
js_hex4() {
    _rest=${js#????}
    # %% (not %): the same 4 characters, found scanning from the left, which is linear;
    # % scans from the right and was quadratic on repetitive text.
    _h=${js%%"$_rest"}
    case $_h in
        [0-9A-Fa-f][0-9A-Fa-f][0-9A-Fa-f][0-9A-Fa-f]) ;;
        *) return 1 ;;
    esac
    js=$_rest
    _hex=$((0x$_h))
}

# js_string: $js starts just after an opening quote; set $jstr to the decoded string and
# leave $js just after the closing quote.
js_string() {
    jstr=
    while :; do
        _pre=${js%%[\"\\]*}
        [ "$_pre" = "$js" ] && return 1
        jstr=$jstr$_pre
        js=${js#"$_pre"}
        case $js in
            \"*)
                js=${js#?}
                return 0
                ;;
        esac
        js=${js#?}
        _rest=${js#?}
        _c=${js%%"$_rest"} # %%: linear, see js_hex4
        js=$_rest
        case $_c in
            \" | \\ | /) jstr=$jstr$_c ;;
            n) jstr=$jstr$NL ;;
            t) jstr=$jstr$TAB ;;
            b | f | r) jstr="$jstr?" ;;
            u)
                js_hex4 || return 1
                if [ "$_hex" -ge 55296 ] && [ "$_hex" -le 56319 ]; then
                    # A high surrogate: a low one must follow.
                    _high=$_hex
                    case $js in
                        \\u*)
                            _save=$js
                            js=${js#??}
                            if js_hex4 && [ "$_hex" -ge 56320 ] && [ "$_hex" -le 57343 ]; then
                                js_codepoint $((65536 + (_high - 55296) * 1024 + _hex - 56320))
                            else
                                js=$_save
                                js_codepoint 65533
                            fi
                            ;;
                        *) js_codepoint 65533 ;;
                    esac
                elif [ "$_hex" -ge 56320 ] && [ "$_hex" -le 57343 ]; then
                    js_codepoint 65533
                elif [ "$_hex" -eq 0 ]; then
                    jstr="$jstr?"
                else
                    js_codepoint "$_hex"
                fi
                ;;
            *) return 1 ;;
        esac
    done
}

# js_number S: S is a JSON number (-?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?).
js_number() {
    _n=${1#-}
    case $_n in
        0*) _n=${_n#0} ;;
        [1-9]*) _n=${_n#"${_n%%[!0-9]*}"} ;;
        *) return 1 ;;
    esac
    case $_n in
        .[0-9]*)
            _n=${_n#.}
            _n=${_n#"${_n%%[!0-9]*}"}
            ;;
    esac
    case $_n in
        [eE]*)
            _n=${_n#?}
            case $_n in [+-]*) _n=${_n#?} ;; esac
            case $_n in [0-9]*) _n=${_n#"${_n%%[!0-9]*}"} ;; *) return 1 ;; esac
            ;;
    esac
    [ -z "$_n" ]
}

# js_skip: skip one non-string value at the start of $js, setting $jtype to object, array,
# literal (true, false, null) or number; a scalar's text goes to $jraw. Nested brackets
# must match; scalars must be JSON literals or numbers.
js_skip() {
    jraw=
    case $js in
        \{*) jtype=object ;;
        \[*) jtype=array ;;
    esac
    case $js in
        \{* | \[*)
            _stack=
            while :; do
                _pre=${js%%[]\[{\}\"]*}
                [ "$_pre" = "$js" ] && return 1
                js=${js#"$_pre"}
                case $js in
                    \"*)
                        js=${js#?}
                        js_string || return 1
                        ;;
                    \{*)
                        js=${js#?}
                        _stack="$_stack}"
                        ;;
                    \[*)
                        js=${js#?}
                        _stack="$_stack]"
                        ;;
                    \}*)
                        js=${js#?}
                        case $_stack in *\}) _stack=${_stack%?} ;; *) return 1 ;; esac
                        [ -z "$_stack" ] && return 0
                        ;;
                    *)
                        js=${js#?}
                        case $_stack in *\]) _stack=${_stack%?} ;; *) return 1 ;; esac
                        [ -z "$_stack" ] && return 0
                        ;;
                esac
            done
            ;;
    esac
    jraw=${js%%[],\}$WS]*}
    case $jraw in
        true | false | null) jtype=literal ;;
        *)
            js_number "$jraw" || return 1
            jtype=number
            ;;
    esac
    js=${js#"$jraw"}
}

# json_parse TEXT: TEXT must be one JSON object; set j_<member> for the members this client
# uses (strings; expires_in as its text). A repeated member of these is an error, and so is
# one of the wrong type ($j_bad then names it): access_token must be a string, the other
# strings a string or null (absent), expires_in a number.
json_parse() {
    js=$1
    j_bad=''
    j_access_token='' j_error='' j_error_description='' j_request_id=''
    j_policy='' j_scope='' j_target='' j_expires_in=''
    _seen=' '
    js_ws
    case $js in
        \{*) js=${js#?} ;;
        *) return 1 ;;
    esac
    js_ws
    case $js in
        \}*)
            js=${js#?}
            js_ws
            [ -z "$js" ]
            return
            ;;
    esac
    while :; do
        case $js in
            \"*) js=${js#?} ;;
            *) return 1 ;;
        esac
        js_string || return 1
        _key=$jstr
        js_ws
        case $js in
            :*) js=${js#?} ;;
            *) return 1 ;;
        esac
        js_ws
        case $js in
            \"*)
                js=${js#?}
                js_string || return 1
                _value=$jstr
                jtype=string
                ;;
            *)
                js_skip || return 1
                _value=$jraw
                ;;
        esac
        case $_key in
            access_token | error | error_description | request_id | policy | scope | target | expires_in)
                case $_seen in *" $_key "*) return 1 ;; esac
                _seen="$_seen$_key "
                ;;
        esac
        case $_key:$jtype in
            access_token:string | expires_in:number) ;;
            error:string | error_description:string | request_id:string | policy:string | scope:string | target:string) ;;
            error:literal | error_description:literal | request_id:literal | policy:literal | scope:literal | target:literal)
                if [ "$_value" = null ]; then
                    _value=
                else
                    j_bad=$_key
                    return 1
                fi
                ;;
            access_token:* | error:* | error_description:* | request_id:* | policy:* | scope:* | target:* | expires_in:*)
                j_bad=$_key
                return 1
                ;;
        esac
        case $_key in
            access_token) j_access_token=$_value ;;
            error) j_error=$_value ;;
            error_description) j_error_description=$_value ;;
            request_id) j_request_id=$_value ;;
            policy) j_policy=$_value ;;
            scope) j_scope=$_value ;;
            target) j_target=$_value ;;
            expires_in) j_expires_in=$_value ;;
        esac
        js_ws
        case $js in
            ,*)
                js=${js#?}
                js_ws
                ;;
            \}*)
                js=${js#?}
                js_ws
                [ -z "$js" ]
                return
                ;;
            *) return 1 ;;
        esac
    done
}

# ---- the exchange -----------------------------------------------------------------------

# read_headers: from the last response's headers, set $h_retry_after (whole seconds, or
# empty), $h_request_id and $h_content_type. Only the final header block counts.
read_headers() {
    h_retry_after='' h_request_id='' h_content_type=''
    [ -f "$tmpdir/headers" ] || return 0
    while IFS= read -r _line || [ -n "$_line" ]; do
        _line=${_line%"$CR"}
        _value=${_line#*:}
        _value=${_value#"${_value%%[! $TAB]*}"}
        _value=${_value%"${_value##*[! $TAB]}"}
        case $_line in
            HTTP/*) h_retry_after='' h_request_id='' h_content_type='' ;;
            [Rr][Ee][Tt][Rr][Yy]-[Aa][Ff][Tt][Ee][Rr]:*)
                case $_value in
                    '' | *[!0-9]*) h_retry_after= ;; # an HTTP-date: use the backoff
                    *)
                        _value=${_value#"${_value%%[!0]*}"}
                        h_retry_after=${_value:-0}
                        ;;
                esac
                ;;
            [Xx]-[Rr][Ee][Qq][Uu][Ee][Ss][Tt]-[Ii][Dd]:*) h_request_id=$_value ;;
            [Cc][Oo][Nn][Tt][Ee][Nn][Tt]-[Tt][Yy][Pp][Ee]:*) h_content_type=$_value ;;
        esac
    done <"$tmpdir/headers"
}

# post: one POST of $form to $endpoint; curl's stdout (the body, a newline, the status).
post() {
    if [ "$loopback" = 1 ]; then
        set -- --noproxy '*'
    else
        set --
    fi
    # -q first: ignore any .curlrc, which could add -v (printing the body) or -f.
    curl -q --silent --show-error "$@" \
        --globoff --max-filesize "$MAX_BODY" \
        --proto '=http,https' --connect-timeout 10 --max-time 60 \
        --user-agent "$USER_AGENT" \
        --header 'Content-Type: application/x-www-form-urlencoded' \
        --header 'Accept: application/json' \
        --header 'Expect:' \
        --dump-header "$tmpdir/headers" \
        --write-out '\n%{http_code}' \
        --data @- \
        --url "$endpoint" <<EOF
$form
EOF
}

# describe_error STATUS: print the service's error on stderr.
describe_error() {
    json_ok=0
    j_error='' j_error_description='' j_request_id=''
    # A long body is not parsed: the parser is slow on large input, and tokenmint's errors
    # are short.
    if [ "${#body}" -le "$MAX_ERROR_BODY" ] && json_parse "$body"; then
        json_ok=1
    fi
    _rid=$j_request_id
    [ -n "$_rid" ] || _rid=$h_request_id
    if [ "$json_ok" = 1 ] && [ -n "$j_error" ]; then
        sanitize "$j_error"
        printf '  error: %s\n' "$clean" >&2
        if [ -n "$j_error_description" ]; then
            sanitize "$j_error_description"
            printf '  error_description: %s\n' "$clean" >&2
        fi
    else
        sanitize "$h_content_type"
        printf '  the body is not a tokenmint error (content-type: %s)\n' "${clean:-none}" >&2
    fi
    if [ -n "$_rid" ]; then
        sanitize "$_rid"
        printf '  request_id: %s\n' "$clean" >&2
    fi
}

# random: a number from 0 to 65535 on stdout, for the backoff's jitter.
random() {
    _r=$(od -An -N2 -tu2 /dev/urandom 2>/dev/null) || _r=
    _r=${_r#"${_r%%[! ]*}"}
    case $_r in
        '' | *[!0-9]*) _r=$(($$ * 31 + attempt * 7919)) ;;
    esac
    printf '%s\n' "$((_r % 65536))"
}

# ---- main -------------------------------------------------------------------------------

url='' audience='' scope='' policy='' token_var=TOKENMINT_ID_TOKEN export_name='' retries=3
have_export=0
while [ $# -gt 0 ]; do
    case $1 in
        -h | --help)
            usage
            exit 0
            ;;
        --version)
            printf '%s %s\n' "$PROG" "$VERSION"
            exit 0
            ;;
        --url | --audience | --scope | --policy | --token-var | --export | --retries)
            [ $# -ge 2 ] || refuse "$1 needs a value"
            _opt=$1 _val=$2
            shift 2
            ;;
        --url=* | --audience=* | --scope=* | --policy=* | --token-var=* | --export=* | --retries=*)
            _opt=${1%%=*} _val=${1#*=}
            shift
            ;;
        -*)
            # Name the option, never its value: a value may be a token given by mistake.
            refuse "unknown option ${1%%=*} (see --help)"
            ;;
        *) refuse "unexpected argument (not shown); tokens are read from a variable, never from arguments (see --help)" ;;
    esac
    case $_opt in
        --url) url=$_val ;;
        --audience) audience=$_val ;;
        --scope) scope=$_val ;;
        --policy) policy=$_val ;;
        --token-var) token_var=$_val ;;
        --export)
            export_name=$_val
            have_export=1
            ;;
        --retries) retries=$_val ;;
    esac
done

[ -n "$url" ] || refuse "--url is required (see --help)"
[ -n "$audience" ] || refuse "--audience is required (see --help)"
if [ "$have_export" = 1 ] && ! valid_name "$export_name"; then
    sanitize "$export_name"
    refuse "--export \"$clean\" is not a variable name ([A-Za-z_][A-Za-z0-9_]*)"
fi
if ! valid_name "$token_var"; then
    sanitize "$token_var"
    refuse "--token-var \"$clean\" is not a variable name ([A-Za-z_][A-Za-z0-9_]*)"
fi
case $retries in
    '' | *[!0-9]*) refuse "--retries must be a number from 0 to 10" ;;
esac
# Leading zeros stripped: sh arithmetic reads 08 as a bad octal number.
retries=${retries#"${retries%%[!0]*}"}
retries=${retries:-0}
case $retries in
    ???*) refuse "--retries must be a number from 0 to 10" ;;
esac
[ "$retries" -le 10 ] || refuse "--retries must be a number from 0 to 10"
check_url

# $token_var is a validated name, so this eval reads that one variable and nothing else.
eval "ci_token=\${$token_var-}"
[ -n "$ci_token" ] || refuse "\$$token_var is empty or unset: declare it in the job (GitLab: id_tokens: $token_var: aud: ...)"
valid_token "$ci_token" || refuse "\$$token_var holds characters outside [A-Za-z0-9._~+/=-]; it is not a CI token (not shown)"

command -v curl >/dev/null 2>&1 || fail "curl is needed and is not on PATH"

urlencode "$audience"
form="grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aid_token&audience=$enc"
if [ -n "$scope" ]; then
    urlencode "$scope"
    form="$form&scope=$enc"
fi
if [ -n "$policy" ]; then
    urlencode "$policy"
    form="$form&policy=$enc"
fi
urlencode "$ci_token"
form="$form&subject_token=$enc"
unset ci_token enc

tmpdir=$(mktemp -d "${TMPDIR:-/tmp}/tokenmint-exchange.XXXXXX") || fail "cannot create a temporary directory"
trap 'rm -rf -- "$tmpdir"' EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM

attempt=0
backoff=1
while :; do
    attempt=$((attempt + 1))
    rm -f -- "$tmpdir/headers"
    out=$(post)
    rc=$?
    case $out in
        *"$NL"*)
            status=${out##*"$NL"}
            body=${out%"$NL"*}
            ;;
        *)
            status=000
            body=
            ;;
    esac
    read_headers
    retry=0
    if [ "$rc" -eq 0 ] && [ "${#body}" -gt "$MAX_BODY" ]; then
        # --max-filesize stops only a body whose length curl knows in advance.
        rc=63
    fi
    if [ "$rc" -eq 63 ]; then
        what="the answer from $endpoint is larger than $((MAX_BODY / 1024)) KiB (HTTP $status): not a tokenmint answer"
        body=
    elif [ "$rc" -ne 0 ]; then
        case $rc in
            5 | 6 | 7 | 28 | 35 | 52 | 55 | 56) retry=1 ;;
        esac
        what="could not complete the request to $endpoint (curl exit $rc)"
    else
        case $status in
            200) break ;;
            429 | 5??) retry=1 ;;
        esac
        what="the exchange failed with HTTP $status"
    fi
    if [ "$retry" = 0 ] || [ "$attempt" -gt "$retries" ]; then
        say "$what"
        [ "$rc" -eq 0 ] && describe_error
        exit 1
    fi
    # Equal jitter: half the backoff fixed, half random (whole seconds, for POSIX sleep).
    wait=$((backoff / 2 + $(random) % (backoff - backoff / 2 + 1)))
    [ "$wait" -ge 1 ] || wait=1
    if [ "$rc" -eq 0 ] && [ -n "$h_retry_after" ]; then
        if [ "${#h_retry_after}" -gt 4 ] || [ "$h_retry_after" -gt "$MAX_WAIT" ]; then
            say "$what; the service asks to wait ${h_retry_after}s (Retry-After), more than ${MAX_WAIT}s: giving up"
            describe_error
            exit 1
        fi
        wait=$h_retry_after
    fi
    say "$what; retrying in ${wait}s (attempt $((attempt + 1)) of $((retries + 1)))"
    [ "$rc" -eq 0 ] && describe_error
    sleep "$wait"
    backoff=$((backoff * 2))
    [ "$backoff" -le "$MAX_BACKOFF" ] || backoff=$MAX_BACKOFF
done

if ! json_parse "$body"; then
    [ -n "$j_bad" ] && fail "HTTP 200, but $j_bad in the response has the wrong JSON type (access_token must be a string)"
    fail "HTTP 200, but the body is not a JSON object"
fi
[ -n "$j_access_token" ] || fail "HTTP 200, but the response has no access_token"
valid_token "$j_access_token" || refuse "the service returned an access token with characters outside [A-Za-z0-9._~+/=-]; not printing it"

# What identifies this exchange in the audit trail; never the token.
sanitize "target ${j_target:-?}, policy ${j_policy:-?}, scope \"$j_scope\", expires in ${j_expires_in:-?}s, request_id ${j_request_id:-$h_request_id}"
say "got a token: $clean"
if [ "$have_export" = 1 ]; then
    printf "export %s='%s'\n" "$export_name" "$j_access_token"
else
    printf '%s\n' "$j_access_token"
fi
