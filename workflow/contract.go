package workflow

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
)

// ManifestSchema is the JSON Schema of a workflow manifest: editors and
// generators can use it, and Parse checks every manifest against it.
//
//go:embed manifest.schema.json
var ManifestSchema []byte

// compiledManifestSchema is built once; it is immutable after that.
var compiledManifestSchema = sync.OnceValues(func() (*jsonschema.Schema, error) {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(ManifestSchema))
	if err != nil {
		return nil, err
	}
	return compileSchema("tasker:manifest.schema.json", doc)
})

// Contract is a compiled JSON Schema that values are checked against: a
// workflow's input schema, or a step's result or error schema. Compiled once
// per workflow version; safe for concurrent use.
type Contract struct {
	schema *jsonschema.Schema
	doc    any
}

// Violation is one way a value breaks a contract. Pointer is the JSON
// pointer (RFC 6901) of the offending value, "" for the value itself.
type Violation struct {
	Pointer string `json:"pointer"`
	Message string `json:"message"`
}

func (v Violation) String() string {
	p := v.Pointer
	if p == "" {
		p = "/"
	}
	return p + ": " + v.Message
}

// ContractError lists every violation of a contract.
type ContractError struct {
	// Contract names the contract: "input", or "result of step charge".
	Contract   string
	Violations []Violation
}

func (e *ContractError) Error() string {
	parts := make([]string, len(e.Violations))
	for i, v := range e.Violations {
		parts[i] = v.String()
	}
	return fmt.Sprintf("%s violates its contract: %s", e.Contract, strings.Join(parts, "; "))
}

// Doc returns the schema document the contract was compiled from.
func (c *Contract) Doc() any { return c.doc }

// Check validates v (a decoded JSON value, see DecodeJSON) and returns a
// *ContractError naming every violation, or nil.
func (c *Contract) Check(name string, v any) error {
	if c == nil {
		return nil
	}
	err := c.schema.Validate(v)
	if err == nil {
		return nil
	}
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return &ContractError{Contract: name, Violations: []Violation{{Message: err.Error()}}}
	}
	return &ContractError{Contract: name, Violations: violations(ve)}
}

// CheckJSON decodes raw JSON and validates it.
func (c *Contract) CheckJSON(name string, raw []byte) error {
	v, err := DecodeJSON(raw)
	if err != nil {
		return &ContractError{Contract: name, Violations: []Violation{{Message: err.Error()}}}
	}
	return c.Check(name, v)
}

// DecodeJSON decodes one JSON value the way contracts expect it: numbers
// stay json.Number, so large integers are compared exactly.
func DecodeJSON(raw []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("invalid JSON: %w", err)
	}
	// dec.More stops at a stray '}' or ']'; only the end of input will do.
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("invalid JSON: unexpected data after the value")
	}
	return v, nil
}

// violations flattens a jsonschema error tree into its leaves, de-duplicated
// and in pointer order, so users see each concrete problem once.
func violations(ve *jsonschema.ValidationError) []Violation {
	p := message.NewPrinter(language.English)
	var out []Violation
	seen := map[Violation]bool{}
	var walk func(e *jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		if len(e.Causes) == 0 {
			vs := []Violation{{Pointer: pointer(e.InstanceLocation), Message: e.ErrorKind.LocalizedString(p)}}
			if r, ok := e.ErrorKind.(*kind.Required); ok {
				// One violation per missing field, pointing where it belongs.
				vs = vs[:0]
				for _, f := range r.Missing {
					vs = append(vs, Violation{Pointer: pointer(append(e.InstanceLocation[:len(e.InstanceLocation):len(e.InstanceLocation)], f)), Message: "is required"})
				}
			}
			for _, v := range vs {
				if !seen[v] {
					seen[v] = true
					out = append(out, v)
				}
			}
			return
		}
		for _, c := range e.Causes {
			walk(c)
		}
	}
	walk(ve)
	sort.Slice(out, func(i, j int) bool {
		if out[i].Pointer != out[j].Pointer {
			return out[i].Pointer < out[j].Pointer
		}
		return out[i].Message < out[j].Message
	})
	return out
}

func pointer(tokens []string) string {
	var b strings.Builder
	for _, t := range tokens {
		b.WriteByte('/')
		t = strings.ReplaceAll(t, "~", "~0")
		b.WriteString(strings.ReplaceAll(t, "/", "~1"))
	}
	return b.String()
}

// refusingLoader keeps schema compilation pure: a contract may use only
// local references ("#/$defs/..."), never fetch a file or URL.
type refusingLoader struct{}

func (refusingLoader) Load(url string) (any, error) {
	if rest, ok := strings.CutPrefix(url, manifestBase); ok {
		// A relative reference ("common.json"), resolved against the
		// schema's place in the manifest: name the file as written.
		url = path.Base(rest)
	}
	return nil, fmt.Errorf("external $ref %q is not allowed; inline it under $defs and use \"#/$defs/...\"", url)
}

// manifestBase is the base URL of the schemas in a manifest. It must be
// hierarchical: against an opaque one ("tasker:x") a relative $ref such as
// "common.json" resolves to the schema itself and is silently accepted.
const manifestBase = "tasker:///"

// compileSchema compiles one schema document (2020-12 unless it says
// otherwise), asserting formats so that "format: email" means something.
func compileSchema(url string, doc any) (*jsonschema.Schema, error) {
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	c.UseLoader(refusingLoader{})
	if err := c.AddResource(url, doc); err != nil {
		return nil, err
	}
	return c.Compile(url)
}

// newContract compiles a schema found in a manifest.
func newContract(url string, doc any) (*Contract, error) {
	s, err := compileSchema(url, doc)
	if err != nil {
		return nil, err
	}
	return &Contract{schema: s, doc: doc}, nil
}

// checkStructure validates a document against ManifestSchema.
func checkStructure(doc *document, ps *problems) {
	s, err := compiledManifestSchema()
	if err != nil {
		ps.add("", "internal error: manifest schema: %v", err)
		return
	}
	err = s.Validate(doc.root)
	if err == nil {
		return
	}
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		ps.add("", "%v", err)
		return
	}
	pr := message.NewPrinter(language.English)
	var walk func(e *jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		if len(e.Causes) > 0 {
			for _, c := range e.Causes {
				walk(c)
			}
			return
		}
		path := pointerToPath(doc.root, e.InstanceLocation)
		if r, ok := e.ErrorKind.(*kind.Required); ok {
			for _, f := range r.Missing {
				ps.add(joinPath(path, f), "is required")
			}
			return
		}
		if ap, ok := e.ErrorKind.(*kind.AdditionalProperties); ok {
			for _, f := range ap.Properties {
				if s := suggest(f, manifestFields); s != "" {
					ps.add(joinPath(path, f), "unknown field %q; did you mean %q?", f, s)
				} else {
					ps.add(joinPath(path, f), "unknown field %q", f)
				}
			}
			return
		}
		msg := e.ErrorKind.LocalizedString(pr)
		if t, ok := e.ErrorKind.(*kind.Type); ok && t.Got != "string" && len(t.Want) == 1 && t.Want[0] == "string" {
			msg += "; quote the value"
		}
		ps.add(path, "%s", msg)
	}
	walk(ve)
}

// manifestFields are the field names a manifest may use anywhere, for
// "did you mean" suggestions on unknown fields.
var manifestFields = []string{
	"name", "namespace", "version", "description", "input_schema", "systems",
	"defaults", "steps", "capabilities", "timeout", "retry", "capability",
	"owner", "depends_on", "input", "result_schema", "error_schema", "transport", "subject",
	"max_attempts", "backoff", "retryable", "initial", "max", "multiplier", "jitter",
}

// suggest returns the candidate closest to s if it is a plausible typo.
func suggest(s string, candidates []string) string {
	best, bestD := "", 3
	for _, c := range candidates {
		if d := editDistance(s, c); d < bestD {
			best, bestD = c, d
		}
	}
	if bestD > len(s)/2 {
		return ""
	}
	return best
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
