package agent

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/tasker-run/tasker/breaker"
	"github.com/tasker-run/tasker/bus/busurl"
	"github.com/tasker-run/tasker/consensus"
	"github.com/tasker-run/tasker/gossip"
	"github.com/tasker-run/tasker/insight/heal"
	"github.com/tasker-run/tasker/insight/llm"
	"github.com/tasker-run/tasker/workflow"
)

// loadHealing reads and validates a self-healing policy file.
func loadHealing(path string) (heal.Policy, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return heal.Policy{}, err
	}
	p, err := heal.ParsePolicy(b)
	if err != nil {
		return heal.Policy{}, fmt.Errorf("%s: %w", path, err)
	}
	return p, nil
}

// llmConfig is the language model's configuration.
func (c *Config) llmConfig() llm.Config {
	return llm.Config{Endpoint: c.AIEndpoint, Model: c.AIModel, APIKeyEnv: c.AIAPIKeyEnv, Timeout: c.AITimeout}
}

// loadBreakers reads and validates a breaker policy file.
func loadBreakers(path string) (breaker.Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return breaker.Config{}, err
	}
	cfg, err := breaker.ParseConfig(b)
	if err != nil {
		return breaker.Config{}, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// Limits of the Raft snapshot settings (see Validate).
const (
	minSnapshotThreshold = 16
	minTrailingLogs      = 16
	maxRaftEntries       = 10_000_000
	minSnapshotInterval  = 100 * time.Millisecond
)

// Limits of the execution history's age: below a minute it holds next to
// nothing; the ceiling catches a typo's extra zeros.
const (
	minHistoryAge = time.Minute
	maxHistoryAge = 366 * 24 * time.Hour
)

// Config is the whole configuration of an agent: defaults, then a config
// file, then TASKER_* environment variables, then flags, validated once at
// start with messages that name the setting.
type Config struct {
	// NodeName identifies the agent in the cluster; the host name by default.
	NodeName string `yaml:"node_name"`
	// System labels the agent with the workflow system (a name under a
	// manifest's systems) whose apps it is the sidecar of. A step whose
	// owner is a system runs only on agents labeled with it, or on agents
	// with no label. Empty: no label.
	System string `yaml:"system"`
	// DataDir holds Raft's log, stable store and snapshots.
	DataDir string `yaml:"data_dir"`
	// Server makes the agent a Raft server that holds workflow state.
	Server bool `yaml:"server"`
	// BootstrapExpect is the number of servers to wait for before forming
	// the cluster; 1 forms a one-server cluster at once.
	BootstrapExpect int `yaml:"bootstrap_expect"`
	// ClientAddr is the IP of the local API; keep it on loopback.
	ClientAddr string `yaml:"client_addr"`
	// HTTPPort is the local API port: Connect, gRPC, gRPC-Web, health.
	HTTPPort int `yaml:"http_port"`
	// BindAddr is the IP for agent-to-agent traffic: RPC, gossip, Raft.
	BindAddr string `yaml:"bind_addr"`
	// AdvertiseAddr is the IP other agents use to reach this one; BindAddr
	// by default (set it when binding 0.0.0.0).
	AdvertiseAddr string `yaml:"advertise_addr"`
	// RPCPort is the agent-to-agent Connect port: forwarding to the
	// leader, dispatch to the agent whose app runs a step.
	RPCPort int `yaml:"rpc_port"`
	// GossipPort is memberlist's TCP and UDP port.
	GossipPort int `yaml:"gossip_port"`
	// RaftPort is Raft's TCP port (servers only).
	RaftPort int `yaml:"raft_port"`
	// Join lists gossip addresses (host:port) to join at start; failing to
	// reach any of them is an error.
	Join []string `yaml:"join"`
	// RetryJoin lists gossip addresses to keep trying until one answers.
	RetryJoin []string `yaml:"retry_join"`
	// RetryInterval is the wait between retry-join attempts.
	RetryInterval time.Duration `yaml:"retry_interval"`
	// Encrypt is the base64 gossip encryption key (tasker keygen).
	Encrypt string `yaml:"encrypt"`
	// TLS of agent-to-agent RPC and Raft (tls.go, docs/security.md): the
	// CA, this agent's certificate and key ('tasker tls'), and what is
	// verified. All three files or none.
	TLSCAFile            string `yaml:"tls_ca_file"`
	TLSCertFile          string `yaml:"tls_cert_file"`
	TLSKeyFile           string `yaml:"tls_key_file"`
	VerifyIncoming       bool   `yaml:"verify_incoming"`
	VerifyOutgoing       bool   `yaml:"verify_outgoing"`
	VerifyServerHostname bool   `yaml:"verify_server_hostname"`
	// BreakersFile holds circuit-breaker and retry policies (YAML or JSON,
	// Dapr's resiliency vocabulary; see docs/operations.md).
	BreakersFile string `yaml:"breakers_file"`
	// RPCHoldTimeout bounds how long a forwarded call waits for a leader
	// during an election before it fails with unavailable.
	RPCHoldTimeout time.Duration `yaml:"rpc_hold_timeout"`
	// MaxPayloadBytes bounds task inputs, step results and manifests.
	MaxPayloadBytes int `yaml:"max_payload_bytes"`
	// LogLevel is debug, info, warn or error; LogFormat text or json.
	LogLevel  string `yaml:"log_level"`
	LogFormat string `yaml:"log_format"`
	// Tracing exports OpenTelemetry spans over OTLP, configured by the
	// standard OTEL_EXPORTER_OTLP_* variables; setting OTLPEndpoint turns
	// it on too. Off by default.
	Tracing      bool   `yaml:"tracing"`
	OTLPEndpoint string `yaml:"otlp_endpoint"`
	// Bus is the service bus servers publish lifecycle events to and
	// execute transport: bus steps over, as a URL (bus/busurl): "embedded"
	// runs NATS in the process (the -dev default), nats://, redis://,
	// amqp://, kafka:// name a backend, "" or "off" turns it off.
	Bus string `yaml:"bus"`
	// BusListen is the embedded NATS server's client address, for other
	// processes to consume events (default 127.0.0.1, a free port).
	BusListen string `yaml:"bus_listen"`
	// BusOutboxMax bounds the events waiting for the bus on each server;
	// beyond it new events are counted as dropped (tasker.bus.dropped).
	BusOutboxMax int `yaml:"bus_outbox_max"`
	// ShutdownTimeout bounds a graceful shutdown.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	// ReclaimGrace is how long a worker whose stream broke has to come
	// back before its steps go to others, and how long an attempt a new
	// leader finds in flight waits for its worker to report.
	ReclaimGrace time.Duration `yaml:"reclaim_grace"`
	// DevTiming shortens Raft's and gossip's timeouts for a cluster on one
	// machine (tests, demos): failover in about a second. Not for real
	// networks.
	DevTiming bool `yaml:"dev_timing"`
	// RaftSnapshotThreshold is how many new log entries make a server
	// snapshot its state and compact its log at the next check;
	// RaftSnapshotInterval is how often it checks (plus up to as much
	// again of jitter); RaftTrailingLogs is how many entries a compaction
	// keeps, so that a server a little behind catches up from the log
	// instead of a whole snapshot. Servers only. The defaults (Consul's)
	// suit production; lower ones make tests reach a compaction quickly.
	RaftSnapshotThreshold int           `yaml:"raft_snapshot_threshold"`
	RaftSnapshotInterval  time.Duration `yaml:"raft_snapshot_interval"`
	RaftTrailingLogs      int           `yaml:"raft_trailing_logs"`
	// HistoryMaxRecords and HistoryMaxAge bound the execution history
	// (one record per ended step attempt, consensus/history.go): the
	// oldest records go when there are more, or when they ended longer
	// ago than the age, checked as each record is written. Servers only.
	// Give every server the same values: each prunes its own copy, and
	// servers with different ones hold different histories.
	HistoryMaxRecords int           `yaml:"history_max_records"`
	HistoryMaxAge     time.Duration `yaml:"history_max_age"`
	// ACLEnabled makes every API call carry a token whose policy covers
	// it (docs/acl.md). Off by default.
	ACLEnabled bool `yaml:"acl_enabled"`
	// ACLInitialManagementToken is a management token set in
	// configuration, to create the first stored tokens with; set it on
	// the servers (docs/acl.md, bootstrap).
	ACLInitialManagementToken string `yaml:"acl_initial_management_token"`
	// ACLAgentToken is the token this agent sends other agents. Every
	// agent accepts its own as the agent policy, so one shared secret on
	// every agent works without any stored token.
	ACLAgentToken string `yaml:"acl_agent_token"`
	// ACLTokenTTL is how long a client agent trusts what a server said
	// about a token: a deleted token works at most this long there.
	ACLTokenTTL time.Duration `yaml:"acl_token_ttl"`
	// AIEndpoint and AIModel name an OpenAI-compatible Chat Completions
	// server (Ollama, llama.cpp, vLLM, OpenAI) that explains diagnoses;
	// none by default: the analyzers need no model (docs/insight.md).
	AIEndpoint string `yaml:"ai_endpoint"`
	AIModel    string `yaml:"ai_model"`
	// ApprovalRequired refuses ApplyWorkflow of a new workflow or a new
	// version: changes go through proposals an operator approves.
	ApprovalRequired bool `yaml:"approval_required"`
	// AIAPIKeyEnv names the environment variable that holds the model's
	// API key: the key itself never sits in a config file.
	AIAPIKeyEnv string `yaml:"ai_api_key_env"`
	// AITimeout bounds one answer of the model.
	AITimeout time.Duration `yaml:"ai_timeout"`
	// HealingFile holds the self-healing policy (insight/heal): which
	// remediations the leader may apply without a person's approval. None:
	// every proposal waits for approval.
	HealingFile string `yaml:"healing_file"`
	// MCP serves the Model Context Protocol at /mcp on the local API port
	// (mcpserver), for AI assistants; on by default. Where the local API
	// is not on loopback it is served only with ACLs on.
	MCP bool `yaml:"mcp"`
	// MCPReadOnly offers only the MCP tools that change nothing.
	MCPReadOnly bool `yaml:"mcp_read_only"`
	// Dev runs a whole one-server cluster on loopback with a temporary
	// data dir and fast Raft timeouts: for development only.
	Dev bool `yaml:"-"`
	// ConfigFile is where the file settings came from.
	ConfigFile string `yaml:"-"`
	// Limits protect the cluster (limits.go); their keys sit at the top
	// level of the config file.
	Limits `yaml:",inline"`
}

// Defaults returns the configuration of an agent nobody configured.
func Defaults() Config {
	host, _ := os.Hostname()
	return Config{
		NodeName:        host,
		ClientAddr:      "127.0.0.1",
		HTTPPort:        7420,
		BindAddr:        "127.0.0.1",
		RPCPort:         7421,
		GossipPort:      7422,
		RaftPort:        7423,
		RetryInterval:   time.Second,
		RPCHoldTimeout:  7 * time.Second,
		MaxPayloadBytes: 1 << 20,
		BusOutboxMax:    100000,
		LogLevel:        "info",
		LogFormat:       "text",
		ShutdownTimeout: 30 * time.Second,
		ReclaimGrace:    5 * time.Second,

		RaftSnapshotThreshold: 16384,
		RaftSnapshotInterval:  30 * time.Second,
		RaftTrailingLogs:      10240,
		HistoryMaxRecords:     consensus.DefaultHistoryMaxRecords,
		HistoryMaxAge:         consensus.DefaultHistoryMaxAge,
		ACLTokenTTL:           30 * time.Second,
		MCP:                   true,
		Limits:                defaultLimits(),
	}
}

// setting is one configurable value, settable from the config file (by
// its YAML key), the environment (TASKER_NAME) and a flag (-name).
type setting struct {
	name   string
	usage  string
	isBool bool
	list   bool // repeatable: each use adds
	apply  func(c *Config, v string) error
	// reset empties a list, so that a later source replaces what an
	// earlier one said instead of adding to it.
	reset func(c *Config)
}

func settings() []setting {
	str := func(name, usage string, field func(*Config) *string) setting {
		return setting{name: name, usage: usage, apply: func(c *Config, v string) error { *field(c) = v; return nil }}
	}
	num := func(name, usage string, field func(*Config) *int) setting {
		return setting{name: name, usage: usage, apply: func(c *Config, v string) error {
			n, err := strconv.Atoi(v)
			if err != nil {
				return fmt.Errorf("%q is not a whole number", v)
			}
			*field(c) = n
			return nil
		}}
	}
	boolean := func(name, usage string, field func(*Config) *bool) setting {
		return setting{name: name, usage: usage, isBool: true, apply: func(c *Config, v string) error {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return fmt.Errorf("%q is not true or false", v)
			}
			*field(c) = b
			return nil
		}}
	}
	duration := func(name, usage string, field func(*Config) *time.Duration) setting {
		return setting{name: name, usage: usage, apply: func(c *Config, v string) error {
			d, err := time.ParseDuration(v)
			if err != nil {
				return fmt.Errorf("%q is not a duration (such as 500ms or 30s)", v)
			}
			*field(c) = d
			return nil
		}}
	}
	list := func(name, usage string, field func(*Config) *[]string) setting {
		return setting{name: name, usage: usage, list: true, reset: func(c *Config) { *field(c) = nil }, apply: func(c *Config, v string) error {
			for _, part := range strings.Split(v, ",") {
				if part = strings.TrimSpace(part); part != "" {
					*field(c) = append(*field(c), part)
				}
			}
			return nil
		}}
	}
	return append([]setting{
		str("node", "node name (default: the host name)", func(c *Config) *string { return &c.NodeName }),
		str("system", "system label: the manifest system whose apps this agent serves; steps owned by another system never run here", func(c *Config) *string { return &c.System }),
		str("data-dir", "data directory for Raft's log and snapshots", func(c *Config) *string { return &c.DataDir }),
		boolean("server", "run as a Raft server that holds workflow state", func(c *Config) *bool { return &c.Server }),
		num("bootstrap-expect", "servers to wait for before forming the cluster", func(c *Config) *int { return &c.BootstrapExpect }),
		str("client", "IP of the local API (keep it on loopback)", func(c *Config) *string { return &c.ClientAddr }),
		num("http-port", "local API port (0 picks a free one)", func(c *Config) *int { return &c.HTTPPort }),
		str("bind", "IP for agent-to-agent traffic", func(c *Config) *string { return &c.BindAddr }),
		str("advertise", "IP other agents reach this one on (default: -bind)", func(c *Config) *string { return &c.AdvertiseAddr }),
		num("rpc-port", "agent-to-agent RPC port (0 picks a free one)", func(c *Config) *int { return &c.RPCPort }),
		num("gossip-port", "gossip port, TCP and UDP (0 picks a free one)", func(c *Config) *int { return &c.GossipPort }),
		num("raft-port", "Raft port (0 picks a free one)", func(c *Config) *int { return &c.RaftPort }),
		list("join", "gossip address host:port to join at start (repeatable, or comma-separated)", func(c *Config) *[]string { return &c.Join }),
		list("retry-join", "gossip address to keep trying until it answers (repeatable, or comma-separated)", func(c *Config) *[]string { return &c.RetryJoin }),
		str("encrypt", "gossip encryption key, base64 (tasker keygen)", func(c *Config) *string { return &c.Encrypt }),
		boolean("acl", "require an ACL token on every API call (docs/acl.md)", func(c *Config) *bool { return &c.ACLEnabled }),
		str("acl-initial-management-token", "management token from configuration, to bootstrap ACLs (servers)", func(c *Config) *string { return &c.ACLInitialManagementToken }),
		str("acl-agent-token", "token agents send each other when ACLs are on; the same on every agent, or an agent-policy token", func(c *Config) *string { return &c.ACLAgentToken }),
		str("tls-ca-file", "CA certificate (PEM) that signs every agent's certificate (tasker tls ca create)", func(c *Config) *string { return &c.TLSCAFile }),
		str("tls-cert-file", "this agent's certificate (PEM; tasker tls cert create -server or -client)", func(c *Config) *string { return &c.TLSCertFile }),
		str("tls-key-file", "this agent's private key (PEM)", func(c *Config) *string { return &c.TLSKeyFile }),
		boolean("verify-incoming", "require a certificate from the CA of every agent calling the RPC and Raft ports; refuse plaintext", func(c *Config) *bool { return &c.VerifyIncoming }),
		boolean("verify-outgoing", "call other agents over TLS and check their certificates against the CA", func(c *Config) *bool { return &c.VerifyOutgoing }),
		boolean("verify-server-hostname", "calls meant for a server (forwarding to the leader) accept only a server.<domain> certificate", func(c *Config) *bool { return &c.VerifyServerHostname }),
		boolean("dev-timing", "short Raft and gossip timeouts, for a cluster on one machine (tests, demos)", func(c *Config) *bool { return &c.DevTiming }),
		num("raft-snapshot-threshold", "new Raft log entries that make a server snapshot and compact its log (servers)", func(c *Config) *int { return &c.RaftSnapshotThreshold }),
		duration("raft-snapshot-interval", "how often a server checks whether to snapshot, such as 30s (servers)", func(c *Config) *time.Duration { return &c.RaftSnapshotInterval }),
		num("raft-trailing-logs", "Raft log entries a compaction keeps for servers slightly behind (servers)", func(c *Config) *int { return &c.RaftTrailingLogs }),
		num("history-max-records", "ended step attempts the execution history keeps; the same on every server (servers)", func(c *Config) *int { return &c.HistoryMaxRecords }),
		duration("history-max-age", "how long the execution history keeps an ended step attempt, such as 168h; the same on every server (servers)", func(c *Config) *time.Duration { return &c.HistoryMaxAge }),
		str("breakers", "circuit-breaker and retry policy file (YAML or JSON)", func(c *Config) *string { return &c.BreakersFile }),
		str("ai-endpoint", "OpenAI-compatible Chat Completions base URL (http://localhost:11434/v1 for Ollama) that explains diagnoses; none by default", func(c *Config) *string { return &c.AIEndpoint }),
		str("ai-model", "the model -ai-endpoint serves", func(c *Config) *string { return &c.AIModel }),
		str("ai-api-key-env", "environment variable holding the model's API key (the key is never in a config file)", func(c *Config) *string { return &c.AIAPIKeyEnv }),
		duration("ai-timeout", "how long one answer of the model may take, such as 60s", func(c *Config) *time.Duration { return &c.AITimeout }),
		str("healing", "self-healing policy file (YAML): which remediations the leader applies without approval (servers; docs/insight.md)", func(c *Config) *string { return &c.HealingFile }),
		boolean("approval-required", "refuse ApplyWorkflow of a new workflow or version: changes are filed as proposals for an operator to approve (docs/operations.md)", func(c *Config) *bool { return &c.ApprovalRequired }),
		boolean("mcp", "serve the Model Context Protocol for AI assistants at /mcp on the local API port (docs/cli.md, tasker mcp); off with -mcp=false", func(c *Config) *bool { return &c.MCP }),
		boolean("mcp-read-only", "offer only the MCP tools that change nothing", func(c *Config) *bool { return &c.MCPReadOnly }),
		num("max-payload", "largest task input, step result or manifest, in bytes", func(c *Config) *int { return &c.MaxPayloadBytes }),
		str("log-level", "debug, info, warn or error", func(c *Config) *string { return &c.LogLevel }),
		str("log-format", "text or json", func(c *Config) *string { return &c.LogFormat }),
		boolean("tracing", "export OpenTelemetry traces over OTLP, as the OTEL_EXPORTER_OTLP_* variables say", func(c *Config) *bool { return &c.Tracing }),
		str("bus", "service bus URL for events and bus steps: embedded (NATS in the process; the -dev default), nats://, redis://, amqp://, kafka://, or off", func(c *Config) *string { return &c.Bus }),
		str("bus-listen", "client address of the embedded NATS server (host:port; default 127.0.0.1 and a free port)", func(c *Config) *string { return &c.BusListen }),
		num("bus-outbox-max", "events a server keeps for the bus while it is unreachable; more are dropped and counted", func(c *Config) *int { return &c.BusOutboxMax }),
		str("otlp-endpoint", "OTLP collector URL for traces (http://host:4318; host:4317 with OTEL_EXPORTER_OTLP_PROTOCOL=grpc); turns tracing on", func(c *Config) *string { return &c.OTLPEndpoint }),
	}, limitSettings()...)
}

// flagValue records a flag's text so it can be applied after the file and
// the environment: flags win.
type flagValue struct {
	isBool bool
	list   bool
	val    string
	vals   []string
}

func (f *flagValue) String() string { return f.val }
func (f *flagValue) Set(v string) error {
	f.val = v
	f.vals = append(f.vals, v)
	return nil
}
func (f *flagValue) IsBoolFlag() bool { return f.isBool }

// Load builds a configuration from args (the agent's flags), the
// environment (getenv) and the config file -config names, in that order of
// precedence, and validates it.
func Load(args []string, getenv func(string) string) (Config, error) {
	cfg := Defaults()
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	fs.SetOutput(discard{})
	configFile := fs.String("config", "", "config file (YAML or JSON)")
	dev := fs.Bool("dev", false, "one-server cluster on loopback with a temporary data dir")
	all := settings()
	values := make([]*flagValue, len(all))
	for i, s := range all {
		values[i] = &flagValue{isBool: s.isBool, list: s.list}
		fs.Var(values[i], s.name, s.usage)
	}
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected argument %q; flags come as -name value", fs.Arg(0))
	}
	if *dev {
		cfg.Dev, cfg.Server, cfg.BootstrapExpect = true, true, 1
	}
	if *configFile != "" {
		if err := cfg.loadFile(*configFile); err != nil {
			return cfg, err
		}
	}
	for _, s := range all {
		env := "TASKER_" + strings.ToUpper(strings.ReplaceAll(s.name, "-", "_"))
		if v := getenv(env); v != "" {
			if s.reset != nil {
				// The environment replaces the file's list.
				s.reset(&cfg)
			}
			if err := s.apply(&cfg, v); err != nil {
				return cfg, fmt.Errorf("%s: %w", env, err)
			}
		}
	}
	var errs []error
	fs.Visit(func(f *flag.Flag) {
		for i, s := range all {
			if s.name != f.Name {
				continue
			}
			vals := []string{values[i].val}
			if s.list {
				// Flags replace what the file and environment said.
				s.reset(&cfg)
				vals = values[i].vals
			}
			for _, v := range vals {
				if err := s.apply(&cfg, v); err != nil {
					errs = append(errs, fmt.Errorf("-%s: %w", s.name, err))
				}
			}
		}
	})
	if err := errors.Join(errs...); err != nil {
		return cfg, err
	}
	return cfg, cfg.Validate()
}

// Usage lists the agent's flags for help text.
func Usage() string {
	var b strings.Builder
	b.WriteString("  -config FILE\n\tconfig file (YAML or JSON; keys as in docs/operations.md)\n  -dev\n\tone-server cluster on loopback with a temporary data dir\n")
	for _, s := range settings() {
		fmt.Fprintf(&b, "  -%s\n\t%s (env TASKER_%s)\n", s.name, s.usage, strings.ToUpper(strings.ReplaceAll(s.name, "-", "_")))
	}
	return b.String()
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

func (c *Config) loadFile(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	c.ConfigFile = path
	return nil
}

// Validate checks every setting and names each one that is wrong.
func (c *Config) Validate() error {
	var errs []error
	bad := func(setting, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", setting, fmt.Sprintf(format, args...)))
	}
	if c.NodeName == "" {
		bad("node", "is empty; set -node or TASKER_NODE")
	}
	if c.System != "" && !workflow.ValidSystemName(c.System) {
		bad("system", "%q is not a system name: use %s, as under a manifest's systems", c.System, workflow.SystemNameRule)
	}
	if err := busurl.Check(c.Bus); err != nil {
		bad("bus", "%v", err)
	} else if !c.Server && c.Bus != "" && c.Bus != "off" {
		bad("bus", "only servers publish events and run bus steps; drop -bus on this client agent (or add -server)")
	}
	if c.BusOutboxMax < 1 {
		bad("bus-outbox-max", "%d must be at least 1 (default 100000)", c.BusOutboxMax)
	}
	if c.DataDir == "" && !c.Dev {
		bad("data-dir", "is required (or use -dev for a temporary one)")
	}
	if !c.Server && c.BootstrapExpect != 0 {
		bad("bootstrap-expect", "only servers bootstrap the cluster; add -server or drop -bootstrap-expect")
	}
	if c.BootstrapExpect < 0 || c.BootstrapExpect > 9 {
		bad("bootstrap-expect", "%d is out of range: use 1, 3 or 5 (at most 9)", c.BootstrapExpect)
	}
	if !c.Server && len(c.Join) == 0 && len(c.RetryJoin) == 0 {
		bad("join", "a client agent needs servers: set -join or -retry-join to a server's gossip address (or add -server)")
	}
	if c.AdvertiseAddr != "" && net.ParseIP(c.AdvertiseAddr) == nil {
		bad("advertise", "%q is not an IP address", c.AdvertiseAddr)
	}
	for _, l := range []struct {
		name  string
		addrs []string
	}{{"join", c.Join}, {"retry-join", c.RetryJoin}} {
		for _, addr := range l.addrs {
			if _, port, err := net.SplitHostPort(addr); err != nil || port == "" {
				bad(l.name, "%q is not host:port (the gossip port, 7422 by default)", addr)
			}
		}
	}
	if c.Encrypt != "" {
		if _, err := gossip.DecodeKey(c.Encrypt); err != nil {
			bad("encrypt", "%v; generate one with 'tasker keygen'", err)
		}
	}
	c.validateTLS(bad)
	if c.RetryInterval <= 0 || c.RetryInterval > time.Hour {
		bad("retry_interval", "%v is out of range: use a positive duration up to 1h", c.RetryInterval)
	}
	if c.RPCHoldTimeout <= 0 || c.RPCHoldTimeout > 5*time.Minute {
		bad("rpc_hold_timeout", "%v is out of range: use a positive duration up to 5m", c.RPCHoldTimeout)
	}
	if c.BreakersFile != "" {
		if _, err := loadBreakers(c.BreakersFile); err != nil {
			bad("breakers", "%v", err)
		}
	}
	if c.AIEndpoint != "" || c.AIModel != "" {
		// The key is read when the agent starts; here only its variable's name.
		if _, err := llm.New(c.llmConfig(), func(string) string { return "set" }); err != nil {
			bad("ai-endpoint", "%v", err)
		}
	}
	if c.AITimeout < 0 || c.AITimeout > 10*time.Minute {
		bad("ai-timeout", "%v is out of range: use a positive duration up to 10m (0 means %v)", c.AITimeout, llm.DefaultTimeout)
	}
	if c.HealingFile != "" {
		if !c.Server {
			bad("healing", "only servers heal (the leader applies the policy); drop -healing on this client agent")
		} else if _, err := loadHealing(c.HealingFile); err != nil {
			bad("healing", "%v", err)
		}
	}
	if c.MCPReadOnly && !c.MCP {
		bad("mcp-read-only", "does nothing with -mcp=false: drop it, or turn -mcp back on")
	}
	if ip := net.ParseIP(c.ClientAddr); ip == nil {
		bad("client", "%q is not an IP address", c.ClientAddr)
	}
	if ip := net.ParseIP(c.BindAddr); ip == nil {
		bad("bind", "%q is not an IP address", c.BindAddr)
	}
	for _, p := range []struct {
		name string
		v    int
	}{{"http-port", c.HTTPPort}, {"rpc-port", c.RPCPort}, {"gossip-port", c.GossipPort}, {"raft-port", c.RaftPort}} {
		if p.v < 0 || p.v > 65535 {
			bad(p.name, "%d is not a port (0-65535; 0 picks a free one)", p.v)
		}
	}
	if c.MaxPayloadBytes < 1024 || c.MaxPayloadBytes > 64<<20 {
		bad("max-payload", "%d is out of range: use 1024 to %d bytes", c.MaxPayloadBytes, maxPayloadCeiling)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("log-level", "%q: use debug, info, warn or error", c.LogLevel)
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		bad("log-format", "%q: use text or json", c.LogFormat)
	}
	if c.ShutdownTimeout <= 0 {
		bad("shutdown_timeout", "must be positive")
	}
	// The floors keep a server from snapshotting (a full copy of the
	// state, written to disk) on nearly every write; the ceilings catch a
	// typo's extra zeros before the log grows without bound.
	if c.RaftSnapshotThreshold < minSnapshotThreshold || c.RaftSnapshotThreshold > maxRaftEntries {
		bad("raft-snapshot-threshold", "%d is out of range: use %d to %d entries (default 16384)", c.RaftSnapshotThreshold, minSnapshotThreshold, maxRaftEntries)
	}
	if c.RaftTrailingLogs < minTrailingLogs || c.RaftTrailingLogs > maxRaftEntries {
		bad("raft-trailing-logs", "%d is out of range: use %d to %d entries (default 10240)", c.RaftTrailingLogs, minTrailingLogs, maxRaftEntries)
	}
	if c.RaftSnapshotInterval < minSnapshotInterval || c.RaftSnapshotInterval > 24*time.Hour {
		bad("raft-snapshot-interval", "%v is out of range: use %v to 24h (default 30s)", c.RaftSnapshotInterval, minSnapshotInterval)
	}
	if c.HistoryMaxRecords < 1 || c.HistoryMaxRecords > consensus.MaxHistoryRecords {
		bad("history-max-records", "%d is out of range: use 1 to %d records (default %d)", c.HistoryMaxRecords, consensus.MaxHistoryRecords, consensus.DefaultHistoryMaxRecords)
	}
	if c.HistoryMaxAge < minHistoryAge || c.HistoryMaxAge > maxHistoryAge {
		bad("history-max-age", "%v is out of range: use %v to %v (default %v)", c.HistoryMaxAge, minHistoryAge, maxHistoryAge, consensus.DefaultHistoryMaxAge)
	}
	c.validateACL(bad)
	if c.ReclaimGrace <= 0 || c.ReclaimGrace > 10*time.Minute {
		bad("reclaim_grace", "%v is out of range: use a positive duration up to 10m", c.ReclaimGrace)
	}
	c.Limits.validate(bad)
	return errors.Join(errs...)
}
