// Package deploy holds the tests of Tasker's Kubernetes manifests
// (deploy/kubernetes) and Helm chart (deploy/helm/tasker): it renders the
// chart with Helm's own packages, decodes every manifest strictly into the
// k8s.io/api types, and loads each agent container's settings with the
// agent's own configuration loader. It is a module of its own so that Helm
// and the Kubernetes libraries never enter the agent's dependencies; run it
// with `make deploy-test`.
package deploy
