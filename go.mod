module github.com/tasker-run/tasker

go 1.26.0

require (
	connectrpc.com/connect v1.19.1
	github.com/Masterminds/semver/v3 v3.5.0
	github.com/santhosh-tekuri/jsonschema/v6 v6.0.2
	go.yaml.in/yaml/v3 v3.0.6
	golang.org/x/text v0.44.0
	google.golang.org/protobuf v1.36.13-0.20261016172727-e9ee2a76ab8e
)
