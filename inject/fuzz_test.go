package inject

import (
	"encoding/json"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// FuzzReview: whatever object the API server sends, Review never panics,
// and a patch it returns applies to that object and leaves a Pod with the
// sidecar that a second review leaves alone.
func FuzzReview(f *testing.F) {
	for _, s := range []string{
		`{}`,
		`{"metadata":{"annotations":{"tasker.io/inject":"true"}},"spec":{"containers":[{"name":"a"}]}}`,
		`{"metadata":{"annotations":{"tasker.io/inject":"true","tasker.io/cpu":"1e3"}},"spec":{"containers":[{"name":"a","env":[{"name":"TASKER_ADDR"}]}],"volumes":[{"name":"tasker-data"}],"initContainers":[{"name":"i"}]}}`,
		`{"metadata":{"annotations":{"tasker.io/inject":"true"}},"spec":{"containers":[{"name":"tasker"}]}}`,
		`{"metadata":{"annotations":null},"spec":null}`,
		`{"metadata":{"annotations":{"tasker.io/inject":"true","tasker.io/memory":"-0"}},"spec":{"containers":[{"name":"a","ports":[{"containerPort":7423}]}]}}`,
		`[]`, `null`, `"x"`,
	} {
		f.Add([]byte(s))
	}
	cfg := fullConfig()
	in, err := New(cfg)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		req := &admissionv1.AdmissionRequest{UID: "u", Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"}, Operation: admissionv1.Create, Object: runtime.RawExtension{Raw: raw}}
		resp, _, err := in.Review(req)
		if err != nil || !resp.Allowed || len(resp.Patch) == 0 {
			return
		}
		patch, err := jsonpatch.DecodePatch(resp.Patch)
		if err != nil {
			t.Fatalf("the patch: %v", err)
		}
		out, err := patch.Apply(raw)
		if err != nil {
			t.Fatalf("the patch does not apply to %s: %v\n%s", raw, err, resp.Patch)
		}
		var pod corev1.Pod
		if err := json.Unmarshal(out, &pod); err != nil {
			t.Fatalf("the patched object is no Pod: %v\n%s", err, out)
		}
		if !hasContainer(&pod, ContainerName) {
			t.Fatalf("patched, but no sidecar:\n%s", out)
		}
		req.Object.Raw = out
		again, _, err := in.Review(req)
		if err != nil || !again.Allowed || len(again.Patch) != 0 {
			t.Fatalf("a second review changed the patched pod: %v %s", err, again.Patch)
		}
	})
}
