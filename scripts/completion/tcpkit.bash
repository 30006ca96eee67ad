# Bash completion for tcpkit: subcommands, their flags, and the values of
# flags that take one of a few words. Installed as
# share/bash-completion/completions/tcpkit; to try it from the source tree:
#
#   source scripts/completion/tcpkit.bash
#
# Self-contained: needs only bash's `complete`, not the bash-completion package.
# tests/blackbox/test_completion.py checks it against `tcpkit SUB --help`.

_tcpkit() {
  local cur=${COMP_WORDS[COMP_CWORD]}
  local prev=${COMP_WORDS[COMP_CWORD - 1]}
  local sub="" i
  for ((i = 1; i < COMP_CWORD; i++)); do
    case ${COMP_WORDS[i]} in
      serve | connect | bench | relay | port)
        sub=${COMP_WORDS[i]}
        break
        ;;
    esac
  done

  if [[ -z $sub ]]; then
    COMPREPLY=($(compgen -W "serve connect bench relay port -h --help -V --version" -- "$cur"))
    return
  fi

  local flags="-h --help"
  case $sub in
    serve)
      flags+=" --host -p --port -m --mode --reply --framing --encoding --max-message --chat-rate"
      flags+=" -t --threads"
      flags+=" --max-conns --idle-timeout --high-water-mark --drain-timeout --reuse-port -q --quiet"
      flags+=" --io-backend --busy-poll --splice"
      flags+=" --log-format --allow --deny --proxy-protocol --trusted-proxy --proxy-timeout --metrics"
      flags+=" --cluster --cluster-auth-file --tls-cert --tls-key --tls-handshake-timeout --unix --unix-mode"
      ;;
    connect)
      flags+=" --send --encoding --timeout --wait -i --idle-timeout --line --max-line --hex"
      flags+=" --no-shutdown -N"
      flags+=" --tls --tls-ca --insecure --sni --unix"
      ;;
    bench)
      flags+=" --mode -c --conns -s --size -d --duration -t --threads -r --rate --connect-timeout"
      flags+=" --format -o --output --tls --tls-ca --insecure --sni --unix --io-backend --busy-poll"
      ;;
    relay)
      flags+=" --listen --to --delay --jitter --rate --chunk --reset-after --close-after"
      flags+=" --max-conns --threads -q --quiet --log-format --allow --deny"
      flags+=" --tls-cert --tls-key --to-tls --to-ca --to-insecure --to-sni --unix-mode"
      flags+=" --tls-handshake-timeout --idle-timeout --io-backend"
      flags+=" --api --config --seed"
      ;;
    port)
      flags+=" --json"
      ;;
  esac

  # Values for the flags that take one of a few words.
  case $prev in
    -m | --mode)
      if [[ $sub == serve ]]; then
        COMPREPLY=($(compgen -W "ack echo discard chat" -- "$cur"))
      else
        COMPREPLY=($(compgen -W "pingpong connrate stream" -- "$cur"))
      fi
      return
      ;;
    --framing)
      COMPREPLY=($(compgen -W "raw line length" -- "$cur"))
      return
      ;;
    --io-backend)
      COMPREPLY=($(compgen -W "epoll uring" -- "$cur"))
      return
      ;;
    --splice)
      COMPREPLY=($(compgen -W "auto always never" -- "$cur"))
      return
      ;;
    --log-format | --format)
      COMPREPLY=($(compgen -W "text json" -- "$cur"))
      return
      ;;
    --encoding)
      COMPREPLY=($(compgen -W "utf-8 gbk gb18030 big5" -- "$cur"))
      return
      ;;
    -o | --output | --tls-ca | --tls-cert | --tls-key | --to-ca | --unix | --config)
      COMPREPLY=($(compgen -f -- "$cur"))
      return
      ;;
    --host)
      COMPREPLY=($(compgen -W "127.0.0.1 0.0.0.0 :: ::1 localhost" -- "$cur"))
      return
      ;;
  esac

  if [[ $cur == -* ]]; then
    COMPREPLY=($(compgen -W "$flags" -- "$cur"))
  fi
}

complete -F _tcpkit tcpkit
