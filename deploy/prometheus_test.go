package deploy_test

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"go.yaml.in/yaml/v3"
)

// deploy/prometheus.yml scrapes every sftd service of docker-compose.yml,
// by its name on the compose network, at the port its metrics.listen
// gives it (TestCompose's ports check keeps that port unpublished).
func TestPrometheusConfig(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "deploy", "prometheus.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var conf struct {
		ScrapeConfigs []struct {
			JobName      string `yaml:"job_name"`
			DNSSDConfigs []struct {
				Names []string `yaml:"names"`
				Type  string   `yaml:"type"`
				Port  int      `yaml:"port"`
			} `yaml:"dns_sd_configs"`
		} `yaml:"scrape_configs"`
	}
	if err := yaml.Unmarshal(b, &conf); err != nil {
		t.Fatalf("deploy/prometheus.yml: %v", err)
	}
	scraped := map[string]int{} // compose service: port
	for _, sc := range conf.ScrapeConfigs {
		for _, d := range sc.DNSSDConfigs {
			for _, n := range d.Names {
				scraped[n] = d.Port
			}
		}
	}
	p := loadCompose(t)
	for name, s := range p.Services {
		if !isSftd(s) {
			continue
		}
		_, port, err := net.SplitHostPort(deref(s.Environment["SFT_METRICS_LISTEN"]))
		if err != nil {
			t.Errorf("%s: SFT_METRICS_LISTEN: %v", name, err)
			continue
		}
		if got, ok := scraped[name]; !ok || strconv.Itoa(got) != port {
			t.Errorf("%s serves metrics on port %s; prometheus.yml scrapes it at %v (listed: %t)", name, port, got, ok)
		}
	}
}
