# bash completion for vbas(8)                              -*- shell-script -*-
#
# make install puts this file in PREFIX/share/bash-completion/completions/vbas,
# where the bash-completion package loads it the first time 'vbas' is
# completed; without that package, source it from ~/.bashrc.  It needs bash
# alone (not bash-completion's helpers).
#
# What it completes, asked of the vbas being completed (the command word:
# vbas on $PATH, or ./build/vbas as typed), so that it matches that binary:
#   - the commands, from 'vbas help', and COMMAND after 'vbas help';
#   - a command's options, from 'vbas CMD --help' (long ones), and the
#     global options before the command;
#   - file names for POOL and FILE (and --socket's PATH), commands for
#     --on-event's CMD;
#   - the pool's volume names for NAME, SOURCE, SRC, DST, FROM and TO, from
#     'vbas list -o name --json POOL', quietly: a pool that does not open (missing,
#     not a pool, in use) completes nothing.
# Which argument is which comes from the usage line of 'vbas CMD --help'.
# tests/cli/test-docs.sh drives _vbas with COMP_WORDS and COMP_CWORD.

# _vbas_unquote WORD: WORD as the shell would read it, for simple quoting
# (a leading ' or ", backslashes, a leading ~/), into REPLY.
_vbas_unquote()
{
	local w=$1 out= i c
	case $w in
	\'*) w=${w#\'}; w=${w%\'} ;;
	\"*) w=${w#\"}; w=${w%\"} ;;
	*)
		for ((i = 0; i < ${#w}; i++)); do
			c=${w:i:1}
			if [[ $c == \\ ]]; then
				((i++))
				c=${w:i:1}
			fi
			out+=$c
		done
		w=$out ;;
	esac
	[[ $w == "~/"* ]] && w=$HOME/${w#"~/"}
	REPLY=$w
}

# _vbas_commands EXE: the command names 'EXE help' lists, into REPLY.
_vbas_commands()
{
	local line cmds= in=0
	while IFS= read -r line; do
		if [[ $line == Commands:* ]]; then
			in=1
		elif ((in)) && [[ $line =~ ^\ \ ([a-z][a-z-]*)\  ]]; then
			cmds+="${BASH_REMATCH[1]} "
		elif ((in)) && [[ -z $line ]]; then
			break
		fi
	done < <("$1" help 2>/dev/null)
	REPLY="$cmds help version"
}

# _vbas_usage EXE CMD: from 'EXE CMD --help', the long options into
# _vbas_opts, those that take a value (with their short forms) into
# _vbas_valopts as " --size:SIZE -s:SIZE ", and the positional arguments
# of the usage line (its first form) into the array _vbas_pos.
_vbas_usage()
{
	local line usage= inuse=0 re='^ +(-([a-zA-Z]), )?--([a-z][a-z-]*)( ([^ ]+))?'
	_vbas_opts=
	_vbas_valopts=' '
	_vbas_pos=()
	while IFS= read -r line; do
		if [[ $line == "Usage: "* ]]; then
			usage=${line#Usage: }
			inuse=1
		elif ((inuse)) && [[ $line == " "* ]]; then
			usage+=" $line"
		else
			inuse=0
		fi
		if [[ $line =~ $re ]]; then
			_vbas_opts+="--${BASH_REMATCH[3]} "
			if [[ ${BASH_REMATCH[5]} == *[A-Z]* ]]; then
				_vbas_valopts+="--${BASH_REMATCH[3]}:${BASH_REMATCH[5]} "
				[[ -n ${BASH_REMATCH[2]} ]] &&
					_vbas_valopts+="-${BASH_REMATCH[2]}:${BASH_REMATCH[5]} "
			fi
		fi
	done < <("$1" "$2" --help 2>/dev/null)

	# "vbas CMD POOL NAME [--offset OFF] [FILE] | ...": words at bracket
	# depth 0 that are not options or their values, and [WORD] groups.
	local -a toks
	local t o c depth=0 val=0 w
	read -ra toks <<<"$usage"
	for t in "${toks[@]:2}"; do
		o=${t//[!\[]/}
		c=${t//[!\]]/}
		if ((depth == 0)); then
			[[ $t == '|' ]] && break
			if ((val)); then
				val=0
				[[ $t == *[A-Z]* && $t != -* ]] && continue
			fi
			if [[ $t == -* ]]; then
				val=1
			elif [[ $t =~ ^\[?([A-Z][A-Z_]*)\]?$ ]]; then
				_vbas_pos+=("${BASH_REMATCH[1]}")
			fi
		fi
		((depth += ${#o} - ${#c}))
	done
}

# _vbas_volumes EXE POOL PREFIX: the pool's volume names that start with
# PREFIX, one per line, into REPLY (errors ignored: nothing).
_vbas_volumes()
{
	local json name out= i c h re='"name": ?"(([^"\\]|\\.)*)"'
	json=$("$1" list -o name --json -- "$2" 2>/dev/null) || json=
	while [[ $json =~ $re ]]; do
		json=${json#*"${BASH_REMATCH[0]}"}
		h=${BASH_REMATCH[1]}
		name=
		for ((i = 0; i < ${#h}; i++)); do
			c=${h:i:1}
			if [[ $c == \\ ]]; then
				((i++))
				c=${h:i:1}
				case $c in
				n) c=$'\n' ;;
				t) c=$'\t' ;;
				u) printf -v c '%b' "\\u${h:i+1:4}"; ((i += 4)) ;;
				esac
			fi
			name+=$c
		done
		[[ $name == "$3"* ]] && out+=$name$'\n'
	done
	REPLY=$out
}

_vbas()
{
	local cword=$COMP_CWORD cur=${COMP_WORDS[COMP_CWORD]} exe REPLY
	local i w cmd= ci=0 prev _vbas_opts _vbas_valopts
	local -a _vbas_pos

	_vbas_unquote "${COMP_WORDS[0]}"
	exe=$REPLY
	[[ $exe == */* ]] || exe=$(type -P -- "$exe") || return 0
	[[ -x $exe ]] || return 0
	COMPREPLY=()

	# Global options, up to the command.
	for ((i = 1; i < cword; i++)); do
		w=${COMP_WORDS[i]}
		case $w in
		--cache) ((i++)) ;;
		-*) ;;
		*) cmd=$w; ci=$i; break ;;
		esac
	done
	prev=${COMP_WORDS[cword - 1]}
	if [[ -z $cmd ]]; then
		[[ $prev == --cache ]] && return 0
		if [[ $cur == -* ]]; then
			COMPREPLY=($(compgen -W '--cache --help --version -V -h' -- "$cur"))
		else
			_vbas_commands "$exe"
			COMPREPLY=($(compgen -W "$REPLY" -- "$cur"))
		fi
		return 0
	fi
	case $cmd in
	help)
		if ((cword == ci + 1)); then
			_vbas_commands "$exe"
			COMPREPLY=($(compgen -W "${REPLY% help version}" -- "$cur"))
		fi
		return 0 ;;
	version) return 0 ;;
	esac

	_vbas_usage "$exe" "$cmd"
	[[ -n $_vbas_opts ]] || return 0        # not a command of this vbas

	# The value of an option (--opt VALUE, --opt=VALUE: words "--opt" "=" VALUE).
	local opt=
	if [[ $prev == = ]] && ((cword >= 2)); then
		opt=${COMP_WORDS[cword - 2]}
	elif [[ $cur != -* || $cur == - ]] && [[ $_vbas_valopts == *" $prev:"* ]]; then
		opt=$prev
	fi
	[[ $cur == = ]] && { opt=$prev; cur=; }
	if [[ -n $opt && $_vbas_valopts == *" $opt:"* ]]; then
		case $opt in
		--socket)
			compopt -o filenames 2>/dev/null
			_vbas_unquote "$cur"
			mapfile -t COMPREPLY < <(compgen -f -- "$REPLY") ;;
		--on-event)
			COMPREPLY=($(compgen -c -- "$cur")) ;;
		esac
		return 0
	fi
	if [[ $cur == -* ]]; then
		COMPREPLY=($(compgen -W "$_vbas_opts" -- "$cur"))
		return 0
	fi

	# Which positional argument this is, and the pool (the first).
	local n=0 pool=
	for ((i = ci + 1; i < cword; i++)); do
		w=${COMP_WORDS[i]}
		if [[ $w == = ]]; then
			((i++))
		elif [[ $w == -* ]]; then
			[[ $_vbas_valopts == *" $w:"* && ${COMP_WORDS[i + 1]} != = ]] && ((i++))
		else
			((n == 0)) && { _vbas_unquote "$w"; pool=$REPLY; }
			((n++))
		fi
	done
	((n < ${#_vbas_pos[@]})) || return 0
	case ${_vbas_pos[n]} in
	POOL|FILE)
		compopt -o filenames 2>/dev/null
		_vbas_unquote "$cur"
		mapfile -t COMPREPLY < <(compgen -f -- "$REPLY") ;;
	NAME|SOURCE|SRC|DST|FROM|TO)
		[[ -n $pool ]] || return 0
		_vbas_unquote "$cur"
		_vbas_volumes "$exe" "$pool" "$REPLY"
		local name
		while IFS= read -r name; do
			[[ -n $name ]] || continue
			if [[ $cur == [\'\"]* ]]; then
				COMPREPLY+=("$name")
			else
				COMPREPLY+=("$(printf '%q' "$name")")
			fi
		done <<<"$REPLY" ;;
	esac
	return 0
}
complete -F _vbas vbas
