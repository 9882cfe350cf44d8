package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/tasker-run/tasker/inject"
)

func injectCommand() command {
	return group("inject", "inject the agent as a sidecar into Kubernetes pods", `
The sidecar injector: a mutating admission webhook that adds the Tasker
agent to every pod annotated tasker.io/inject: "true", as Dapr's and
Istio's injectors do. See docs/deploy.md, Sidecar injection.
`, injectServeCommand())
}

const injectServeUsage = `
Usage: tasker inject serve -config FILE -tls-cert-file FILE -tls-key-file FILE
         [-listen ADDR] [-shutdown-delay D] [-log-level L] [-log-format F]

Serves the sidecar injector's webhook over HTTPS: POST /mutate answers the
API server's AdmissionReview (v1) with a JSONPatch that adds the agent to
a pod annotated tasker.io/inject: "true"; GET /healthz answers ok. The
config FILE (YAML) says the sidecar's image, the servers' gossip address
and the Secrets of the gossip key, ACL token and TLS files; unknown keys
are errors. The certificate must name the webhook's Service
(tasker-injector.<namespace>.svc) and is reloaded when its files change.

On SIGTERM or SIGINT, /healthz fails at once, the server answers for
-shutdown-delay more (so that the Service stops routing to it first),
then finishes the calls in flight and exits 0.

Exit status: 0 after a clean shutdown; 1 if serving failed; 2 on a usage
error or a bad config file or certificate.
`

func injectServeCommand() command {
	return command{name: "inject serve", synopsis: "serve the sidecar injector's admission webhook over HTTPS", usage: injectServeUsage, run: runInjectServe}
}

func runInjectServe(args []string, stdout, stderr io.Writer) int {
	c := injectServeCommand()
	fs := flags(c, stderr)
	listen := fs.String("listen", inject.DefaultListen, "`address` to serve HTTPS on")
	configFile := fs.String("config", "", "the injector's config `file` (YAML): image, retryJoin, secrets")
	certFile := fs.String("tls-cert-file", "", "the webhook's certificate `file` (PEM), naming tasker-injector.<namespace>.svc")
	keyFile := fs.String("tls-key-file", "", "the certificate's key `file` (PEM)")
	delay := fs.Duration("shutdown-delay", 5*time.Second, "how `long` to keep answering after SIGTERM, failing /healthz, before stopping")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	logFormat := fs.String("log-format", "json", "text or json")
	pos, code, ok := parse(c, fs, args, stdout, stderr)
	if !ok {
		return code
	}
	if len(pos) > 0 {
		return usageError(stderr, c, "unexpected argument %q", pos[0])
	}
	switch {
	case *configFile == "":
		return usageError(stderr, c, "-config is required: the injector's config file")
	case *certFile == "" || *keyFile == "":
		return usageError(stderr, c, "-tls-cert-file and -tls-key-file are required: the API server calls webhooks over HTTPS only")
	case *delay < 0:
		return usageError(stderr, c, "-shutdown-delay %v: want 0 or more", *delay)
	}
	level, ok := map[string]slog.Level{"debug": slog.LevelDebug, "info": slog.LevelInfo, "warn": slog.LevelWarn, "error": slog.LevelError}[*logLevel]
	if !ok {
		return usageError(stderr, c, "-log-level %q: want debug, info, warn or error", *logLevel)
	}
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler
	switch *logFormat {
	case "text":
		h = slog.NewTextHandler(stderr, opts)
	case "json":
		h = slog.NewJSONHandler(stderr, opts)
	default:
		return usageError(stderr, c, "-log-format %q: want text or json", *logFormat)
	}
	log := slog.New(h).With("component", "injector")

	cfg, err := inject.LoadConfig(*configFile)
	if err != nil {
		fmt.Fprintf(stderr, "tasker %s: %v\n", c.name, err)
		return exitUsage
	}
	in, err := inject.New(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "tasker %s: %v\n", c.name, err)
		return exitUsage
	}
	certs, err := inject.NewCertReloader(*certFile, *keyFile, log)
	if err != nil {
		fmt.Fprintf(stderr, "tasker %s: TLS: %v; make the pair with 'tasker tls cert create' (see docs/deploy.md)\n", c.name, err)
		return exitUsage
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintf(stderr, "tasker %s: %v\n", c.name, err)
		return exitFail
	}
	handler := inject.NewHandler(in, log)
	srv := &http.Server{
		Handler:           handler,
		TLSConfig:         &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: certs.GetCertificate},
		ReadHeaderTimeout: 10 * time.Second,
		// The API server waits at most 30 s (timeoutSeconds) for an answer.
		ReadTimeout:  30 * time.Second,
		WriteTimeout: 30 * time.Second,
		IdleTimeout:  2 * time.Minute,
		ErrorLog:     slog.NewLogLogger(h, slog.LevelDebug), // TLS handshake noise from probes and scanners
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	served := make(chan error, 1)
	go func() { served <- srv.ServeTLS(ln, "", "") }()
	log.Info("serving the sidecar injector", "addr", ln.Addr().String(), "mutate", inject.MutatePath, "image", cfg.Image, "native_sidecar", cfg.Native())
	select {
	case err := <-served:
		log.Error("serving failed", "err", err)
		return exitFail
	case <-ctx.Done():
	}
	stop()
	handler.Drain()
	log.Info("shutting down", "delay", delay.String())
	time.Sleep(*delay)
	sctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Error("shutdown", "err", err)
		return exitFail
	}
	if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Error("serving failed", "err", err)
		return exitFail
	}
	log.Info("stopped")
	return exitOK
}
