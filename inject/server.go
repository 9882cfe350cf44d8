package inject

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	kjson "sigs.k8s.io/json"
)

// The server's defaults, which the webhook configuration in
// deploy/kubernetes/injector.yaml and the Helm chart point at.
const (
	DefaultListen = ":8443"
	MutatePath    = "/mutate"
	HealthPath    = "/healthz"
	// MaxBodyBytes bounds an AdmissionReview. A pod is at most etcd's
	// 1.5 MiB object, and a creation's review carries it once.
	MaxBodyBytes = 4 << 20
)

// Handler serves POST /mutate (the webhook) and GET /healthz.
type Handler struct {
	in       *Injector
	log      *slog.Logger
	draining atomic.Bool
	mux      *http.ServeMux
}

// NewHandler serves in's decisions, logging each one to log.
func NewHandler(in *Injector, log *slog.Logger) *Handler {
	h := &Handler{in: in, log: log, mux: http.NewServeMux()}
	h.mux.HandleFunc("POST "+MutatePath, h.mutate)
	h.mux.HandleFunc("GET "+HealthPath, h.health)
	return h
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

// Drain makes /healthz fail, so that the pod leaves the Service's
// endpoints while the server still answers the calls already routed to it.
func (h *Handler) Drain() { h.draining.Store(true) }

func (h *Handler) health(w http.ResponseWriter, _ *http.Request) {
	if h.draining.Load() {
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return
	}
	_, _ = io.WriteString(w, "ok\n")
}

// reviewTypes are the only apiVersion and kind answered: admission.k8s.io/v1beta1
// is gone since Kubernetes 1.22, and its answer has another shape.
const (
	reviewAPIVersion = "admission.k8s.io/v1"
	reviewKind       = "AdmissionReview"
)

func (h *Handler) mutate(w http.ResponseWriter, r *http.Request) {
	fail := func(code int, format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		h.log.Warn("refused a webhook call", "status", code, "err", msg, "from", r.RemoteAddr)
		http.Error(w, msg, code)
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != "application/json" {
			fail(http.StatusUnsupportedMediaType, "Content-Type %q: want application/json (an AdmissionReview, as the API server sends)", ct)
			return
		}
	} else {
		fail(http.StatusUnsupportedMediaType, "no Content-Type: want application/json (an AdmissionReview, as the API server sends)")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		fail(http.StatusRequestEntityTooLarge, "the AdmissionReview is larger than %d bytes", MaxBodyBytes)
		return
	}
	if err != nil {
		fail(http.StatusBadRequest, "reading the body: %v", err)
		return
	}
	var review admissionv1.AdmissionReview
	if err := kjson.UnmarshalCaseSensitivePreserveInts(body, &review); err != nil {
		fail(http.StatusBadRequest, "the body is not an AdmissionReview: %v", err)
		return
	}
	if review.APIVersion != reviewAPIVersion || review.Kind != reviewKind {
		fail(http.StatusBadRequest, "apiVersion %q, kind %q: want %s %s (set admissionReviewVersions: [v1] in the webhook configuration)", review.APIVersion, review.Kind, reviewAPIVersion, reviewKind)
		return
	}
	req := review.Request
	if req == nil || req.UID == "" {
		fail(http.StatusBadRequest, "the AdmissionReview has no request, or a request without a uid")
		return
	}
	resp, res, err := h.in.Review(req)
	if err != nil {
		fail(http.StatusBadRequest, "%v", err)
		return
	}
	// The pod's name is empty for pods of a ReplicaSet, which the API
	// server names after admission: generateName says whose it is. The
	// spec is never logged: env values may be secrets.
	var meta struct {
		Metadata struct {
			Name         string `json:"name"`
			GenerateName string `json:"generateName"`
		} `json:"metadata"`
	}
	_ = kjson.UnmarshalCaseSensitivePreserveInts(req.Object.Raw, &meta)
	attrs := []any{"uid", req.UID, "namespace", req.Namespace, "pod", meta.Metadata.Name, "generate_name", meta.Metadata.GenerateName}
	switch {
	case !resp.Allowed:
		h.log.Info("denied a pod", append(attrs, "reason", resp.Result.Message)...)
	case res.Skipped != "":
		h.log.Debug("left a pod alone", append(attrs, "reason", res.Skipped)...)
	default:
		h.log.Info("injected the sidecar", attrs...)
	}
	out := admissionv1.AdmissionReview{TypeMeta: review.TypeMeta, Response: resp}
	b, err := json.Marshal(out)
	if err != nil {
		fail(http.StatusInternalServerError, "encode the response: %v", err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
}

// CertReloader serves a certificate and key from files and reloads them
// when they change: a Secret volume's files are replaced in place when the
// Secret is (cert-manager's renewals, a rotation by hand), and the
// injector must not need a restart for it.
type CertReloader struct {
	certFile, keyFile string
	log               *slog.Logger
	// every bounds how often the files are looked at: a handshake costs at
	// most two stat calls, once per interval.
	every time.Duration

	mu      sync.Mutex
	cert    *tls.Certificate
	stamp   string
	checked time.Time
}

// NewCertReloader loads the pair once; an error names the file at fault.
func NewCertReloader(certFile, keyFile string, log *slog.Logger) (*CertReloader, error) {
	c := &CertReloader{certFile: certFile, keyFile: keyFile, log: log, every: 10 * time.Second}
	stamp, err := c.stampNow()
	if err != nil {
		return nil, err
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("%s, %s: %w", certFile, keyFile, err)
	}
	c.cert, c.stamp, c.checked = &cert, stamp, time.Now()
	return c, nil
}

func (c *CertReloader) stampNow() (string, error) {
	var s string
	for _, f := range []string{c.certFile, c.keyFile} {
		fi, err := os.Stat(f)
		if err != nil {
			return "", fmt.Errorf("%s: %w", f, err)
		}
		s += fmt.Sprintf("%d/%d;", fi.ModTime().UnixNano(), fi.Size())
	}
	return s, nil
}

// GetCertificate is tls.Config's: the current pair, reloaded if the
// files changed. A pair that fails to load is logged and the old one kept,
// so that a half-written rotation does not take the webhook down.
func (c *CertReloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if time.Since(c.checked) < c.every {
		return c.cert, nil
	}
	c.checked = time.Now()
	stamp, err := c.stampNow()
	if err != nil || stamp == c.stamp {
		if err != nil {
			c.log.Warn("cannot check the TLS certificate for a change; serving the loaded one", "err", err)
		}
		return c.cert, nil
	}
	cert, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		c.log.Warn("cannot reload the TLS certificate; serving the loaded one", "err", err)
		return c.cert, nil
	}
	c.cert, c.stamp = &cert, stamp
	c.log.Info("reloaded the TLS certificate", "cert", c.certFile)
	return c.cert, nil
}
