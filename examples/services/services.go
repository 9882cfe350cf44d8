package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tasker-run/tasker/sdk/go/worker"
)

// version is the version the services register their capabilities with.
const version = "1.0.0"

// definition is one capability: its name, what it does, its contracts
// and how to build its handler.
type definition struct {
	name, description string
	// input and output are the JSON Schemas registered with the sidecar:
	// what the capability accepts, and what it returns (which satisfies
	// the step's result_schema in examples/order-fulfilment.yaml).
	input, output string
	handler       func(*services) worker.Handler
}

// catalog lists the capabilities, in the order the workflow uses them.
var catalog = []definition{
	{
		name: "orders.validate", description: "Checks an order against the catalogue and scores its risk",
		input: validateInputSchema, output: validateResultSchema,
		handler: func(s *services) worker.Handler { return handle(s, validate) },
	},
	{
		name: "inventory.reserve", description: "Holds the stock for every line of an order",
		input: reserveInputSchema, output: reserveResultSchema,
		handler: func(s *services) worker.Handler { return handle(s, reserve) },
	},
	{
		name: "payments.charge", description: "Charges the card for an order's total",
		input: chargeInputSchema, output: chargeResultSchema,
		handler: func(s *services) worker.Handler { return handle(s, s.charge) },
	},
	{
		name: "shipping.book", description: "Books a parcel with a carrier",
		input: shipInputSchema, output: shipResultSchema,
		handler: func(s *services) worker.Handler { return handle(s, ship) },
	},
	{
		name: "notifications.email", description: "Emails a customer from a template",
		input: emailInputSchema, output: emailResultSchema,
		handler: func(s *services) worker.Handler { return handle(s, email) },
	},
}

// capabilityNames lists every capability the services offer.
func capabilityNames() []string {
	out := make([]string, len(catalog))
	for i, d := range catalog {
		out[i] = d.name
	}
	return out
}

// capability is a definition bound to the running services.
type capability struct {
	description, input, output string
	handler                    worker.Handler
}

// services is the state the handlers share: the simulation's settings,
// its random source and the execution journal.
type services struct {
	seed  uint64
	flaky float64
	// failWhile, if not empty, is a file whose existence takes the
	// payment gateway down (-fail-while).
	failWhile string
	delay     delayRange
	journal   *journal // nil without -log
	log       *slog.Logger

	mu  sync.Mutex
	rng *rand.Rand
}

func newServices(seed uint64, flaky float64, delay delayRange, j *journal, log *slog.Logger) *services {
	return &services{seed: seed, flaky: flaky, delay: delay, journal: j, log: log, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
}

// capability returns the capability name; name must be in the catalog.
func (s *services) capability(name string) capability {
	for _, d := range catalog {
		if d.name == name {
			return capability{description: d.description, input: d.input, output: d.output, handler: d.handler(s)}
		}
	}
	panic("order-services: no capability " + name)
}

// errInterrupted marks an execution whose context ended during the
// simulated work time, before the business logic ran: nothing was done.
var errInterrupted = errors.New("interrupted")

// work is the business logic of one capability: a function of the step
// and its decoded input, run after the simulated work time.
type work[In, Out any] func(s *worker.Step, in In, now time.Time) (Out, error)

// handle adapts work to a worker.Handler that decodes the input, spends
// the simulated work time (giving up when the step's context ends),
// encodes the result once, so that the journal holds exactly the bytes
// the sidecar is sent, and journals the execution.
func handle[In, Out any](s *services, fn work[In, Out]) worker.Handler {
	return func(ctx context.Context, st *worker.Step) (any, error) {
		began := time.Now()
		res, err := execute(ctx, s, st, fn)
		s.record(st, began, res, err)
		if err != nil {
			return nil, err
		}
		return res, nil
	}
}

func execute[In, Out any](ctx context.Context, s *services, st *worker.Step, fn work[In, Out]) (json.RawMessage, error) {
	var in In
	if err := st.Bind(&in); err != nil {
		return nil, err
	}
	t := time.NewTimer(s.workTime())
	defer t.Stop()
	select {
	case <-ctx.Done():
		return nil, fmt.Errorf("%s: %w before the work was done: %w", st.Capability, errInterrupted, context.Cause(ctx))
	case <-t.C:
	}
	out, err := fn(st, in, time.Now().UTC())
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(out)
	if err != nil {
		return nil, fmt.Errorf("encode the result of %s: %w", st.Capability, err)
	}
	return b, nil
}

// workTime draws a simulated work time from -delay.
func (s *services) workTime() time.Duration {
	if s.delay.max <= s.delay.min {
		return s.delay.min
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.delay.min + time.Duration(s.rng.Int64N(int64(s.delay.max-s.delay.min)+1))
}

// record journals one execution and logs its outcome.
func (s *services) record(st *worker.Step, began time.Time, res json.RawMessage, err error) {
	e := execution{
		Time: began.UTC(), TaskID: st.TaskID, Step: st.Name, Capability: st.Capability, Attempt: st.Attempt,
		DurationMS: float64(time.Since(began).Microseconds()) / 1000, Outcome: "ok", Result: res, PID: os.Getpid(),
	}
	log := s.log.With("task_id", st.TaskID, "step", st.Name, "attempt", st.Attempt)
	if err != nil {
		e.Outcome = worker.CodeError
		var we *worker.Error
		switch {
		case errors.Is(err, errInterrupted):
			e.Outcome = outcomeInterrupted
		case errors.As(err, &we):
			e.Outcome = we.Code
		}
		e.Error = err.Error()
		log.Info("step failed", "code", e.Outcome, "error", err)
	} else {
		log.Debug("step done", "result", string(res))
	}
	if jerr := s.journal.record(e); jerr != nil {
		s.log.Error("cannot journal an execution", "error", jerr)
	}
}

// unit maps the seed and parts to a number in [0, 1), the same in every
// process and every run.
func (s *services) unit(parts ...string) float64 {
	h := fnv.New64a()
	fmt.Fprint(h, s.seed)
	for _, p := range parts {
		h.Write([]byte{0})
		h.Write([]byte(p))
	}
	return float64(mix(h.Sum64())>>11) / (1 << 53)
}

// mix is SplitMix64's finaliser: it spreads FNV's bits.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// idFor derives an identifier from a step's idempotency key: every
// attempt of a step names the same reservation, charge or parcel.
func idFor(prefix, key string) string {
	h := fnv.New64a()
	h.Write([]byte(key))
	return prefix + strconv.FormatUint(mix(h.Sum64()), 36)
}

// --- orders.validate -------------------------------------------------------

type item struct {
	SKU      string `json:"sku"`
	Quantity int    `json:"quantity"`
}

type validateInput struct {
	OrderID    string `json:"order_id"`
	CustomerID string `json:"customer_id"`
	Items      []item `json:"items"`
}

type validateResult struct {
	Valid     bool    `json:"valid"`
	RiskScore float64 `json:"risk_score"`
	OrderID   string  `json:"order_id"`
	CheckedAt string  `json:"checked_at"`
}

// validate accepts orders with at least one line and scores the
// customer's risk from 0 to 1.
func validate(_ *worker.Step, in validateInput, now time.Time) (validateResult, error) {
	if in.OrderID == "" || len(in.Items) == 0 {
		return validateResult{}, worker.Permanent("invalid_order", "an order needs an id and at least one item")
	}
	h := fnv.New64a()
	h.Write([]byte(in.CustomerID))
	risk := float64(mix(h.Sum64())%100) / 100
	return validateResult{Valid: true, RiskScore: risk, OrderID: in.OrderID, CheckedAt: now.Format(time.RFC3339Nano)}, nil
}

// --- inventory.reserve -----------------------------------------------------

type reserveInput struct {
	OrderID string `json:"order_id"`
	Items   []item `json:"items"`
}

type reserveResult struct {
	ReservationID string `json:"reservation_id"`
	ExpiresAt     string `json:"expires_at"`
	Lines         int    `json:"lines"`
	ReservedAt    string `json:"reserved_at"`
}

// outOfStock marks the SKUs the warehouse has none of.
const outOfStock = "OOS-"

// reserve holds stock for 15 minutes; a SKU starting with "OOS-" is out
// of stock, for good.
func reserve(st *worker.Step, in reserveInput, now time.Time) (reserveResult, error) {
	for _, it := range in.Items {
		if strings.HasPrefix(it.SKU, outOfStock) {
			return reserveResult{}, worker.Permanent("out_of_stock", fmt.Sprintf("no stock of %s", it.SKU))
		}
	}
	return reserveResult{
		ReservationID: idFor("res_", st.IdempotencyKey),
		ExpiresAt:     now.Add(15 * time.Minute).Format(time.RFC3339),
		Lines:         len(in.Items),
		ReservedAt:    now.Format(time.RFC3339Nano),
	}, nil
}

// --- payments.charge -------------------------------------------------------

type chargeInput struct {
	OrderID     string   `json:"order_id"`
	Token       string   `json:"token"`
	AmountCents int64    `json:"amount_cents"`
	Currency    string   `json:"currency"`
	RiskScore   *float64 `json:"risk_score"`
}

type chargeResult struct {
	ChargeID    string `json:"charge_id"`
	Status      string `json:"status"`
	AmountCents int64  `json:"amount_cents"`
	Currency    string `json:"currency"`
	CapturedAt  string `json:"captured_at"`
}

// Payment tokens the simulated gateway refuses for good.
const (
	tokenDeclined = "tok_declined"
	tokenNoFunds  = "tok_no_funds"
)

// charge captures the amount, or holds it for review when the order is
// risky. The gateway is down while the -fail-while file exists, and for
// a -flaky share of attempts.
func (s *services) charge(st *worker.Step, in chargeInput, now time.Time) (chargeResult, error) {
	switch in.Token {
	case tokenDeclined:
		return chargeResult{}, worker.Permanent("card_declined", "the issuer declined the card")
	case tokenNoFunds:
		return chargeResult{}, worker.Permanent("insufficient_funds", "the card has insufficient funds")
	}
	if in.AmountCents <= 0 {
		return chargeResult{}, worker.Permanent("card_declined", "the amount must be positive")
	}
	if s.gatewayDown() {
		return chargeResult{}, worker.Retryable("gateway_unavailable", "the payment gateway is down (simulated: -fail-while "+s.failWhile+" exists)", 0)
	}
	if s.flaky > 0 && s.unit("payments.charge", in.OrderID, strconv.Itoa(st.Attempt)) < s.flaky {
		return chargeResult{}, worker.Retryable("gateway_unavailable", "the payment gateway did not answer (simulated)", 0)
	}
	status := "captured"
	if in.RiskScore != nil && *in.RiskScore >= 0.9 {
		status = "pending_review"
	}
	return chargeResult{
		ChargeID: idFor("ch_", st.IdempotencyKey), Status: status,
		AmountCents: in.AmountCents, Currency: in.Currency, CapturedAt: now.Format(time.RFC3339Nano),
	}, nil
}

// gatewayDown reports whether the -fail-while file exists.
func (s *services) gatewayDown() bool {
	if s.failWhile == "" {
		return false
	}
	_, err := os.Stat(s.failWhile)
	return err == nil
}

// --- shipping.book ---------------------------------------------------------

type address struct {
	Line1    string `json:"line1"`
	City     string `json:"city"`
	Postcode string `json:"postcode"`
	Country  string `json:"country"`
}

type shipInput struct {
	OrderID     string   `json:"order_id"`
	Reservation string   `json:"reservation"`
	Charge      string   `json:"charge"`
	Address     *address `json:"address"`
	Service     string   `json:"service"`
}

type shipResult struct {
	TrackingNumber string `json:"tracking_number"`
	Carrier        string `json:"carrier"`
	EtaDays        int    `json:"eta_days"`
	BookedAt       string `json:"booked_at"`
}

// carriers picks a carrier by destination country.
var carriers = map[string]string{"GB": "Royal Mail", "US": "UPS", "FR": "La Poste", "DE": "DHL", "NL": "PostNL"}

// ship books a parcel with the carrier of the destination country.
func ship(st *worker.Step, in shipInput, now time.Time) (shipResult, error) {
	if in.Reservation == "" || in.Charge == "" {
		return shipResult{}, worker.Permanent("invalid_input", "a parcel needs a stock reservation and a charge")
	}
	carrier, eta := "DHL", 5
	if in.Address != nil {
		if c, ok := carriers[strings.ToUpper(in.Address.Country)]; ok {
			carrier, eta = c, 2
		}
	}
	if in.Service == "express" {
		eta = 1
	}
	return shipResult{
		TrackingNumber: strings.ToUpper(idFor("trk", st.IdempotencyKey)),
		Carrier:        carrier, EtaDays: eta, BookedAt: now.Format(time.RFC3339Nano),
	}, nil
}

// --- notifications.email ---------------------------------------------------

type emailInput struct {
	To       string            `json:"to"`
	Template string            `json:"template"`
	Vars     map[string]string `json:"vars"`
}

type emailResult struct {
	MessageID string `json:"message_id"`
	To        string `json:"to"`
	Template  string `json:"template"`
	SentAt    string `json:"sent_at"`
}

// email sends a templated message.
func email(st *worker.Step, in emailInput, now time.Time) (emailResult, error) {
	if !strings.Contains(in.To, "@") {
		return emailResult{}, worker.Permanent("invalid_address", fmt.Sprintf("%q is not an email address", in.To))
	}
	return emailResult{MessageID: idFor("msg_", st.IdempotencyKey), To: in.To, Template: in.Template, SentAt: now.Format(time.RFC3339Nano)}, nil
}

// --- -delay ----------------------------------------------------------------

// delayRange is the value of -delay: a fixed duration or MIN-MAX.
type delayRange struct{ min, max time.Duration }

func (d *delayRange) String() string {
	if d.min == d.max {
		return d.min.String()
	}
	return d.min.String() + "-" + d.max.String()
}

func (d *delayRange) Set(s string) error {
	lo, hi, isRange := strings.Cut(s, "-")
	if !isRange {
		hi = lo
	}
	minD, err := time.ParseDuration(strings.TrimSpace(lo))
	if err != nil {
		return fmt.Errorf("want a duration or MIN-MAX: %w", err)
	}
	maxD, err := time.ParseDuration(strings.TrimSpace(hi))
	if err != nil {
		return fmt.Errorf("want a duration or MIN-MAX: %w", err)
	}
	if minD < 0 || maxD < minD {
		return fmt.Errorf("%q: want 0 <= MIN <= MAX", s)
	}
	d.min, d.max = minD, maxD
	return nil
}
