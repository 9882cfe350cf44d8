package main

import (
	"fmt"
	"io"

	"github.com/tasker-run/tasker/gossip"
)

const keygenUsage = `
Usage: tasker keygen

Prints a new random 32-byte key, base64-encoded, for encrypting gossip
between agents. Give every agent of a cluster the same key; keep it in a
secret store, not in a config file under version control.
`

func keygenCommand() command {
	return command{name: "keygen", synopsis: "generate a gossip encryption key", usage: keygenUsage, run: runKeygen}
}

func runKeygen(args []string, stdout, stderr io.Writer) int {
	c := keygenCommand()
	fs := flags(c, stderr)
	pos, code, ok := parse(c, fs, args, stdout, stderr)
	if !ok {
		return code
	}
	if len(pos) > 0 {
		return usageError(stderr, c, "unexpected argument %q", pos[0])
	}
	key, err := gossip.GenerateKey()
	if err != nil {
		fmt.Fprintf(stderr, "tasker keygen: %v\n", err)
		return exitFail
	}
	fmt.Fprintln(stdout, key)
	return exitOK
}
