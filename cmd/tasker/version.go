package main

import (
	"encoding/json"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

const versionUsage = `
Usage: tasker version [-o text|json]

Prints the version of this binary: the module version, the commit it was
built from (with "modified" when the tree had uncommitted changes), and
the Go version and platform.
`

func versionCommand() command {
	return command{name: "version", synopsis: "print the version of this binary", usage: versionUsage, run: runVersion}
}

// buildVersion is what the binary knows about itself.
type buildVersion struct {
	Version  string `json:"version"`
	Revision string `json:"revision,omitempty"`
	Modified bool   `json:"modified,omitempty"`
	Go       string `json:"go"`
	Platform string `json:"platform"`
}

// currentVersion reads the version from the build information the Go
// toolchain embeds, so that no release step has to stamp it.
func currentVersion() buildVersion {
	v := buildVersion{Version: "(devel)", Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return v
	}
	if info.Main.Version != "" {
		v.Version = info.Main.Version
	}
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			v.Revision = s.Value
		case "vcs.modified":
			v.Modified = s.Value == "true"
		}
	}
	return v
}

func runVersion(args []string, stdout, stderr io.Writer) int {
	c := versionCommand()
	fs := flags(c, stderr)
	format := formatFlag(fs)
	pos, code, ok := parse(c, fs, args, stdout, stderr)
	if !ok {
		return code
	}
	if len(pos) > 0 {
		return usageError(stderr, c, "unexpected argument %q", pos[0])
	}
	v := currentVersion()
	if *format == formatJSON {
		return writeJSON(stdout, stderr, v)
	}
	fmt.Fprintf(stdout, "tasker %s", v.Version)
	if v.Revision != "" {
		rev := v.Revision
		if len(rev) > 12 {
			rev = rev[:12]
		}
		fmt.Fprintf(stdout, " (%s", rev)
		if v.Modified {
			fmt.Fprint(stdout, ", modified")
		}
		fmt.Fprint(stdout, ")")
	}
	fmt.Fprintf(stdout, " %s %s\n", v.Go, v.Platform)
	return exitOK
}

// writeJSON prints v as indented JSON.
func writeJSON(stdout, stderr io.Writer, v any) int {
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		fmt.Fprintf(stderr, "tasker: write JSON: %v\n", err)
		return exitFail
	}
	return exitOK
}
