package workflow

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strings"
)

// Capability contracts.
//
// With each capability it offers, an app may advertise the JSON Schema of
// the input it accepts and of the result it returns. CheckCapability
// compares one step of a plan with them when the workflow is applied,
// before any task runs, so that a mapping that cannot produce the input the
// app expects, or a result_schema the app's results cannot satisfy, is
// found by the person applying the manifest instead of as a failed step.
//
// Only what is certainly incompatible is reported: the schemas are
// compared keyword by keyword, and anything the comparison does not model
// counts as compatible. Checked, on the input side (the capability's input
// schema against the step's input mapping):
//
//   - the capability's required fields, at the top level and in every
//     object the mapping writes out field by field: each must be mapped.
//     (A field mapped from an optional upstream field counts as mapped.)
//   - the type of every mapped value whose type is known, against the
//     "type" the capability's schema declares for that field: literals,
//     objects and arrays the mapping builds, and expressions whose source
//     is typed by the workflow's input_schema or an upstream step's
//     result_schema. Types are incompatible when no JSON value can be both
//     ("integer" and "number" overlap); an expression reading an untyped
//     or unknown place is not judged.
//   - fields the mapping writes that the capability's schema does not
//     declare where it sets "additionalProperties": false (and has no
//     "patternProperties", which might admit them), and fields whose
//     schema is false.
//   - array elements the mapping writes out, against "items" when it is a
//     single schema (not prefixItems or the tuple form).
//
// On the output side (the capability's output schema against the step's
// result_schema; a step without result_schema accepts any result, so
// there is nothing to compare):
//
//   - each field the result_schema requires must be declared by the output
//     schema, where the output schema declares "properties" and leaves the
//     object closed: no additionalProperties (or false), no
//     patternProperties, no combinators and no unevaluatedProperties other
//     than false. This follows the convention of the mapping check in
//     Compile: an object schema that declares properties and says nothing
//     of additionalProperties describes all its fields.
//   - the "type" of the result and of every field both schemas declare,
//     at any depth, must overlap.
//
// Not checked: formats, enums and const, numeric and length bounds,
// patterns, minItems and the like; required fields of an object passed
// whole by one expression (the upstream schema may not require them, yet
// always produce them); anything behind combinators (allOf, anyOf, oneOf,
// if) beyond the keywords beside them; references other than local ones
// ("#/$defs/x"), whose targets are read without their sibling keywords;
// and downstream steps reading fields of a result that has no
// result_schema. A workflow that passes can still fail at run time on
// values; one that fails cannot work with that app as it advertises
// itself.

// CapabilitySchemas is what an app advertises for a capability: the JSON
// Schemas of its input and its result, decoded once so that many steps
// can be checked against them. The zero value advertises nothing.
type CapabilitySchemas struct {
	input, output any
}

// NewCapabilitySchemas decodes the advertised input and output schemas,
// each JSON text; empty (or null) means that side is not advertised and
// is not checked. The schemas are not compiled: the agent that registered
// the app has done so.
func NewCapabilitySchemas(input, output []byte) (*CapabilitySchemas, error) {
	c := &CapabilitySchemas{}
	for _, s := range []struct {
		name string
		raw  []byte
		dst  *any
	}{{"input schema", input, &c.input}, {"output schema", output, &c.output}} {
		if len(bytes.TrimSpace(s.raw)) == 0 {
			continue
		}
		v, err := DecodeJSON(s.raw)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.name, err)
		}
		*s.dst = v
	}
	return c, nil
}

// CheckCapability reports every certain incompatibility between step and
// the schemas its capability's app advertises (see "Capability
// contracts" above), each with its field path (steps[i].input...,
// steps[i].result_schema...), line and a fix, in source order. nil c, or
// nothing advertised, yields nothing.
func (p *Plan) CheckCapability(step int, c *CapabilitySchemas) []Problem {
	if c == nil || step < 0 || step >= len(p.Steps) {
		return nil
	}
	k := &capCheck{p: p, st: &p.Steps[step], ps: &problems{lines: p.lines}}
	base := indexPath("steps", step)
	if c.input != nil {
		// A step without a mapping receives an empty object.
		var tree any = map[string]any{}
		if k.st.Input != nil {
			tree = k.st.Input.tree
		}
		k.input(c.input, c.input, tree, joinPath(base, "input"), "", false, 0)
	}
	if c.output != nil && k.st.Result != nil {
		doc := k.st.Result.doc
		k.output(doc, doc, c.output, c.output, joinPath(base, "result_schema"), true, "", 0)
	}
	if ve, ok := k.ps.err().(*ValidationError); ok {
		return ve.Problems
	}
	return nil
}

// StepLine returns the line of step i in the manifest the plan was loaded
// from; 0 when unknown (a plan from Compile).
func (p *Plan) StepLine(i int) int {
	return p.lines[indexPath("steps", i)]
}

// maxCompatDepth bounds the walk through recursive schemas ($ref cycles).
const maxCompatDepth = 32

type capCheck struct {
	p  *Plan
	st *PlanStep
	ps *problems
}

// input checks the value the mapping builds at node (the manifest field
// path, and field its name in the step input, "" for the whole input)
// against s, the capability's schema for it within root.
func (k *capCheck) input(root, s, node any, path, field string, inArray bool, depth int) {
	if depth > maxCompatDepth {
		return
	}
	s = deref(root, s)
	if b, ok := s.(bool); ok && !b {
		k.ps.add(path, "capability %q accepts no value for %s (its input schema is false there); remove it from the mapping", k.st.Capability, fieldWords(field))
		return
	}
	m, ok := s.(map[string]any)
	if !ok {
		return
	}
	if got, what := k.nodeTypes(node, inArray); got != nil {
		if want := schemaTypes(m); want != nil && !typesOverlap(got, want) && field == "" {
			k.ps.add(path, "capability %q takes %s as its input, but a step's input is always an object (its mapping); the capability cannot run a workflow step as it advertises itself", k.st.Capability, typeWords(want))
			return
		} else if want != nil && !typesOverlap(got, want) {
			k.ps.add(path, "%s, but capability %q takes %s as %s; map a value of that type", what, k.st.Capability, fieldWords(field), typeWords(want))
			return
		}
	}
	switch t := node.(type) {
	case map[string]any:
		k.inputObject(root, m, t, path, field, depth)
	case []any:
		k.inputArray(root, m, t, path, field, depth)
	}
}

// inputObject checks an object the mapping writes out field by field.
func (k *capCheck) inputObject(root any, m, obj map[string]any, path, field string, depth int) {
	where := "the step's input"
	if field != "" {
		where = "input." + field
	}
	for _, r := range requiredOf(m) {
		if _, ok := obj[r]; !ok {
			k.ps.add(path, "capability %q requires input field %q, which the mapping does not set; add %q to %s", k.st.Capability, joinField(field, r), r+": <expression or value>", where)
		}
	}
	props, _ := m["properties"].(map[string]any)
	_, patterns := m["patternProperties"]
	for _, key := range sortedKeys(obj) {
		fp, ff := joinPath(path, key), joinField(field, key)
		if ps, ok := props[key]; ok {
			k.input(root, ps, obj[key], fp, ff, false, depth+1)
			continue
		}
		if patterns {
			continue // a pattern may admit it; patterns are not matched here
		}
		switch ap := m["additionalProperties"].(type) {
		case bool:
			if ap {
				continue
			}
			declared := sortedKeys(props)
			msg := fmt.Sprintf("capability %q does not accept input field %q: its input schema sets additionalProperties: false and declares %s; remove the field from the mapping", k.st.Capability, ff, listWords(declared))
			if sg := suggest(key, declared); sg != "" {
				msg += fmt.Sprintf(", or did you mean %q?", sg)
			}
			k.ps.add(fp, "%s", msg)
		case map[string]any:
			k.input(root, ap, obj[key], fp, ff, false, depth+1)
		}
	}
}

// inputArray checks the elements of an array the mapping writes out
// against items, when items is one schema for every element.
func (k *capCheck) inputArray(root any, m map[string]any, arr []any, path, field string, depth int) {
	if _, ok := m["prefixItems"]; ok {
		return
	}
	items, ok := m["items"]
	if !ok {
		return
	}
	if _, tuple := items.([]any); tuple {
		return
	}
	for i, el := range arr {
		k.input(root, items, el, indexPath(path, i), fmt.Sprintf("%s[%d]", field, i), true, depth+1)
	}
}

// nodeTypes returns the JSON types the mapping's value at node certainly
// has, and a phrase saying so; nil when unknown. Inside an array an
// expression that finds nothing becomes null, so null joins its types.
func (k *capCheck) nodeTypes(node any, inArray bool) ([]string, string) {
	switch t := node.(type) {
	case *Expr:
		var doc any
		what := "input_schema"
		if t.stepIndex >= 0 {
			what = fmt.Sprintf("result_schema of step %q", t.Step)
			if r := k.p.Steps[t.stepIndex].Result; r != nil {
				doc = r.doc
			}
		} else if k.p.Input != nil {
			doc = k.p.Input.doc
		}
		if doc == nil {
			return nil, ""
		}
		ts := typesAt(doc, t.path)
		if ts == nil {
			return nil, ""
		}
		what = fmt.Sprintf("%s is %s (%s)", t.Source, typeWords(ts), what)
		if inArray {
			ts = append(ts[:len(ts):len(ts)], "null")
			what += ", or null when absent"
		}
		return ts, what
	case map[string]any:
		return []string{"object"}, "the mapping builds an object here"
	case []any:
		return []string{"array"}, "the mapping builds an array here"
	case string:
		return []string{"string"}, "the literal " + literalWords(t) + " is a string"
	case bool:
		return []string{"boolean"}, fmt.Sprintf("the literal %v is a boolean", t)
	case nil:
		return []string{"null"}, "the literal null"
	case json.Number:
		if isIntegral(t) {
			return []string{"integer"}, "the literal " + literalWords(t) + " is an integer"
		}
		return []string{"number"}, "the literal " + literalWords(t) + " is a number"
	}
	return nil, ""
}

// output compares the step's result_schema (s within stepRoot) with the
// capability's output schema (c within capRoot). path follows s in the
// manifest while exact; through a $ref it stays where the reference is.
func (k *capCheck) output(stepRoot, s, capRoot, c any, path string, exact bool, field string, depth int) {
	if depth > maxCompatDepth {
		return
	}
	if isLocalRef(s) {
		exact = false
	}
	sm, ok1 := deref(stepRoot, s).(map[string]any)
	cm, ok2 := deref(capRoot, c).(map[string]any)
	if !ok1 || !ok2 {
		return
	}
	want, have := schemaTypes(sm), schemaTypes(cm)
	if want != nil && have != nil && !typesOverlap(have, want) {
		k.ps.add(path, "wants %s to be %s, but capability %q's output schema says %s; make the two agree", resultWords(field), typeWords(want), k.st.Capability, typeWords(have))
		return
	}
	cprops, _ := cm["properties"].(map[string]any)
	// Beside a $ref (2020-12) other keywords may declare more fields;
	// deref reads only the target, so such a schema is not judged closed.
	if cprops != nil && closedObject(cm) && !refWithSiblings(c) {
		for i, r := range requiredOf(sm) {
			if _, ok := cprops[r]; ok {
				continue
			}
			rp := path
			if exact {
				rp = indexPath(joinPath(path, "required"), i)
			}
			declared := sortedKeys(cprops)
			msg := fmt.Sprintf("requires %s, which capability %q does not return: its output schema declares only %s", resultWords(joinField(field, r)), k.st.Capability, listWords(declared))
			if sg := suggest(r, declared); sg != "" {
				msg += fmt.Sprintf("; did you mean %q?", sg)
			} else {
				msg += "; remove it from required, or have the app return it and advertise it"
			}
			k.ps.add(rp, "%s", msg)
		}
	}
	sprops, _ := sm["properties"].(map[string]any)
	for _, name := range sortedKeys(sprops) {
		cp, ok := cprops[name]
		if !ok {
			continue
		}
		sub := path
		if exact {
			sub = joinPath(joinPath(path, "properties"), name)
		}
		k.output(stepRoot, sprops[name], capRoot, cp, sub, exact, joinField(field, name), depth+1)
	}
}

// typesAt returns the JSON types the schema root certainly gives the value
// at path, nil when it does not say. Every keyword of a schema applies to
// its value, so a field's "properties" entry binds whatever combinators
// sit beside it; a field that only a pattern or a combinator describes is
// unknown.
func typesAt(root any, path []accessor) []string {
	s := root
	for _, a := range path {
		m, ok := deref(root, s).(map[string]any)
		if !ok {
			return nil
		}
		if a.isIdx {
			if pi, ok := m["prefixItems"].([]any); ok {
				if a.index < len(pi) {
					s = pi[a.index]
					continue
				}
			}
			switch it := m["items"].(type) {
			case map[string]any, bool:
				s = it
				continue
			case []any: // the tuple form of older drafts
				if a.index < len(it) {
					s = it[a.index]
					continue
				}
			}
			return nil
		}
		props, _ := m["properties"].(map[string]any)
		if p, ok := props[a.key]; ok {
			s = p
			continue
		}
		if _, ok := m["patternProperties"]; ok {
			return nil
		}
		ap, ok := m["additionalProperties"].(map[string]any)
		if !ok {
			return nil
		}
		s = ap
	}
	m, _ := deref(root, s).(map[string]any)
	return schemaTypes(m)
}

// schemaTypes returns the types a schema's "type" keyword allows; nil when
// it has none (any type).
func schemaTypes(m map[string]any) []string {
	switch t := m["type"].(type) {
	case string:
		return []string{t}
	case []any:
		out := make([]string, 0, len(t))
		for _, x := range t {
			if s, ok := x.(string); ok {
				out = append(out, s)
			}
		}
		if len(out) == 0 {
			return nil
		}
		return out
	}
	return nil
}

// typesOverlap reports whether some JSON value has one of the types a and
// one of b. An integer is a number, and a number may be integral.
func typesOverlap(a, b []string) bool {
	for _, x := range a {
		for _, y := range b {
			if x == y || x == "integer" && y == "number" || x == "number" && y == "integer" {
				return true
			}
		}
	}
	return false
}

// closedObject reports whether an object schema's declared properties are
// all the fields it describes.
func closedObject(m map[string]any) bool {
	if hasCombinator(m) {
		return false
	}
	for _, k := range []string{"patternProperties", "dependentSchemas"} {
		if _, ok := m[k]; ok {
			return false
		}
	}
	if u, ok := m["unevaluatedProperties"]; ok && u != false {
		return false
	}
	ap, ok := m["additionalProperties"]
	return !ok || ap == false
}

func requiredOf(m map[string]any) []string {
	req, _ := m["required"].([]any)
	out := make([]string, 0, len(req))
	for _, r := range req {
		if s, ok := r.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

func isLocalRef(s any) bool {
	m, ok := s.(map[string]any)
	if !ok {
		return false
	}
	ref, ok := m["$ref"].(string)
	return ok && strings.HasPrefix(ref, "#")
}

// refWithSiblings reports whether s is a local $ref with keywords beside
// it that could constrain or describe the value.
func refWithSiblings(s any) bool {
	m, ok := s.(map[string]any)
	if !ok || !isLocalRef(s) {
		return false
	}
	for k := range m {
		switch k {
		case "$ref", "$defs", "definitions", "$schema", "$id", "$comment", "title", "description", "examples", "default":
		default:
			return true
		}
	}
	return false
}

func isIntegral(n json.Number) bool {
	if _, err := n.Int64(); err == nil {
		return true
	}
	s := string(n)
	if !strings.ContainsAny(s, ".eE") {
		return true // an integer beyond 64 bits
	}
	f, err := n.Float64()
	return err == nil && f == math.Trunc(f)
}

func sortedKeys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func joinField(field, key string) string {
	if field == "" {
		return key
	}
	return field + "." + key
}

func fieldWords(field string) string {
	if field == "" {
		return "its input"
	}
	return fmt.Sprintf("input field %q", field)
}

func resultWords(field string) string {
	if field == "" {
		return "the result"
	}
	return fmt.Sprintf("field %q", field)
}

func listWords(names []string) string {
	if len(names) == 0 {
		return "no fields"
	}
	return strings.Join(names, ", ")
}

func typeWords(ts []string) string {
	if len(ts) == 1 {
		return typeList(map[string]any{"type": ts[0]})
	}
	list := make([]any, len(ts))
	for i, t := range ts {
		list[i] = t
	}
	return typeList(map[string]any{"type": list})
}

// literalWords renders a literal for a message, shortened.
func literalWords(v any) string {
	b, _ := json.Marshal(v)
	if s := string(b); len(s) <= 40 {
		return s
	}
	return string(b[:37]) + "..."
}

// capabilityLines keeps the lines CheckCapability can report: each step,
// its capability, and everything under its input and result_schema.
func capabilityLines(lines map[string]int) map[string]int {
	if lines == nil {
		return nil
	}
	out := map[string]int{}
	for path, l := range lines {
		rest, ok := strings.CutPrefix(path, "steps[")
		if !ok {
			continue
		}
		j := strings.IndexByte(rest, ']')
		if j < 0 {
			continue
		}
		rest = rest[j+1:]
		if rest == "" || rest == ".capability" || under(rest, ".input") || under(rest, ".result_schema") {
			out[path] = l
		}
	}
	return out
}

func under(path, field string) bool {
	return path == field || strings.HasPrefix(path, field+".") || strings.HasPrefix(path, field+"[")
}
