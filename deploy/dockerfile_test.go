package deploy_test

import (
	"bufio"
	"go/build"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
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
