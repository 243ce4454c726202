package deploy_test

import (
	"bufio"
	"go/build"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/types"
)

// TestDockerfile checks what deploy/Dockerfile promises: the repository's Go
// version builds static sftd and sft-cli into a distroless nonroot image
// whose entry point is sftd, from a context without the deployment's
// secrets.
func TestDockerfile(t *testing.T) {
	root := repoRoot(t)
	b, err := os.ReadFile(filepath.Join(root, "deploy", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	var from []string
	var text strings.Builder
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") {
			continue
		}
		text.WriteString(line + "\n")
		if f, ok := strings.CutPrefix(line, "FROM "); ok {
			from = append(from, strings.Fields(f)[0])
		}
	}
	df := text.String()

	mod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(mod)
	if m == nil {
		t.Fatal("go.mod has no go directive")
	}
	goMinor := string(m[1])
	if len(from) != 2 || !strings.HasPrefix(from[0], "golang:"+goMinor+"-") || from[1] != "gcr.io/distroless/static-debian12:nonroot" {
		t.Errorf("stages %v, want golang:%s-… then gcr.io/distroless/static-debian12:nonroot", from, goMinor)
	}
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", `-ldflags="-s -w"`, "USER 65532:65532", `ENTRYPOINT ["/sftd"]`} {
		if !strings.Contains(df, want) {
			t.Errorf("Dockerfile lacks %s", want)
		}
	}
	built := regexp.MustCompile(`go build [^\n]* -o /out/ (.+)\n`).FindStringSubmatch(df)
	if built == nil {
		t.Fatal("no `go build ... -o /out/ PACKAGES` line")
	}
	pkgs := strings.Fields(built[1])
	if !slices.Equal(pkgs, []string{"./services/sftd", "./cli/sft-cli"}) {
		t.Errorf("builds %v, want sftd and sft-cli", pkgs)
	}
	for _, p := range pkgs {
		if pkg, err := build.ImportDir(filepath.Join(root, p), 0); err != nil || pkg.Name != "main" {
			t.Errorf("%s is not a command: %v", p, err)
		}
	}

	ignore, err := os.ReadFile(filepath.Join(root, "deploy", "Dockerfile.dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(strings.Fields(string(ignore)), deployDir) {
		t.Errorf("deploy/Dockerfile.dockerignore does not keep %s (the secrets) out of the build context", deployDir)
	}
}

// TestComposeNATSImage keeps the compose file's nats-server the version
// whose configuration parser TestNATSConfig runs.
func TestComposeNATSImage(t *testing.T) {
	mod, err := os.ReadFile(filepath.Join(repoRoot(t), "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s*github\.com/nats-io/nats-server/v2 v(\S+)`).FindSubmatch(mod)
	if m == nil {
		t.Fatal("nats-server is not in go.mod")
	}
	version := string(m[1])
	p := loadCompose(t)
	if img := p.Services["nats"].Image; img != "nats:"+version+"-alpine" {
		t.Errorf("nats image %s, want nats:%s-alpine", img, version)
	}
}

// standinFile overrides docker-compose.yml's images with the stand-ins
// deploy/docker-env.sh builds on a machine without a registry.
const standinFile = "deploy/compose.standin.yml"

// TestComposeStandins checks that the stand-in override changes images and
// nothing else, so the stack TestDockerCompose runs is docker-compose.yml's:
// with the override's image, build and pull policy taken away, every
// service is as docker-compose.yml has it. The stand-ins are local images
// the script builds, never pulled, and NATS's is the version in go.mod.
func TestComposeStandins(t *testing.T) {
	base := loadCompose(t)
	over := loadComposeFiles(t, "docker-compose.yml", standinFile)
	checkStandins(t, base, over)
	if got, want := over.Services["nats"].Image, "sft-standin/nats:"+strings.TrimPrefix(base.Services["nats"].Image, "nats:"); got+"-alpine" != want {
		t.Errorf("nats stand-in %s, want the version of %s", got, base.Services["nats"].Image)
	}
}

// checkStandins checks that over is base with every service's image
// swapped for a local sft-standin/ one that deploy/docker-env.sh builds
// (or, for NATS, names by version), never pulled nor built, and nothing
// else changed.
func checkStandins(t *testing.T, base, over *types.Project) {
	t.Helper()
	script, err := os.ReadFile(filepath.Join(repoRoot(t), "deploy", "docker-env.sh"))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(slices.Sorted(maps.Keys(over.Services)), slices.Sorted(maps.Keys(base.Services))) {
		t.Fatalf("services %v with the stand-ins, want %v", slices.Sorted(maps.Keys(over.Services)), slices.Sorted(maps.Keys(base.Services)))
	}
	for name, s := range over.Services {
		if !strings.HasPrefix(s.Image, "sft-standin/") || s.PullPolicy != types.PullPolicyNever || s.Build != nil {
			t.Errorf("%s: image %q, pull_policy %q, build %v; want a local sft-standin/ image, never pulled, not built", name, s.Image, s.PullPolicy, s.Build)
		}
		if !strings.HasPrefix(s.Image, "sft-standin/nats:") && !strings.Contains(string(script), s.Image) {
			t.Errorf("%s: deploy/docker-env.sh does not build %s", name, s.Image)
		}
		want := base.Services[name]
		s.Image, s.Build, s.PullPolicy = want.Image, want.Build, want.PullPolicy
		if !reflect.DeepEqual(s, want) {
			t.Errorf("%s: the stand-ins change more than the image:\n%+v\nwant\n%+v", name, s, want)
		}
	}
}
