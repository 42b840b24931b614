package tests

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// guidePath is the user guide whose shell blocks TestGuide runs.
const guidePath = "../docs/GUIDE.md"

// guideOverlays are the directories the guide writes to. In the test's mount namespace each is an
// overlay whose upper layer is a temporary directory, so the guide's commands run with the paths a
// reader types (/etc/kmipfs, /var/lib/kmipfs, /mnt/kmip, /sbin/mount.fuse.kmipfs, ...) and leave
// nothing behind on the machine.
var guideOverlays = []string{"/etc", "/var", "/srv", "/mnt", "/usr/local", "/usr/sbin"}

// guideBlock is one ```sh block of the guide.
type guideBlock struct {
	line int // line of the opening fence, for failure messages
	text string
}

// readGuideBlocks returns the guide's ```sh blocks in order. Blocks with another info string
// (text, toml, ...) are illustrations and are not run.
func readGuideBlocks(t *testing.T, path string) []guideBlock {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var blocks []guideBlock
	var cur *guideBlock
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		switch {
		case cur == nil && line == "```sh":
			cur = &guideBlock{line: n}
		case cur != nil && line == "```":
			blocks = append(blocks, *cur)
			cur = nil
		case cur != nil:
			cur.text += line + "\n"
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if cur != nil {
		t.Fatalf("%s:%d: the sh block is never closed", path, cur.line)
	}
	return blocks
}

// guideMarker is a command line whose trailing comment says what must happen: "# fails" (the
// command must fail) or "# prints: TEXT" (its output must contain TEXT).
var guideMarker = regexp.MustCompile(`^(.*\S)\s+# (fails|prints: (.+))$`)

// guideScript turns the blocks into one bash script: it stops at the first command that fails,
// traces every command, and checks the markers.
func guideScript(blocks []guideBlock) string {
	var b strings.Builder
	b.WriteString("set -euo pipefail\nset -x\n")
	b.WriteString(`guide_fails() { if eval "$1"; then echo "GUIDE: expected to fail: $1" >&2; exit 1; fi; }` + "\n")
	b.WriteString(`guide_prints() { local out; out=$(eval "$1"); printf '%s\n' "$out"; ` +
		`grep -qF -- "$2" <<<"$out" || { echo "GUIDE: expected output containing '$2' from: $1" >&2; exit 1; }; }` + "\n")
	for _, blk := range blocks {
		fmt.Fprintf(&b, ": == docs/GUIDE.md line %d\n", blk.line)
		inHeredoc := ""
		for _, line := range strings.SplitAfter(strings.TrimSuffix(blk.text, "\n"), "\n") {
			line = strings.TrimSuffix(line, "\n")
			if inHeredoc != "" {
				b.WriteString(line + "\n")
				if line == inHeredoc {
					inHeredoc = ""
				}
				continue
			}
			if i := strings.Index(line, "<<'"); i >= 0 {
				inHeredoc, _, _ = strings.Cut(line[i+3:], "'") // the word after <<'WORD'

			}
			m := guideMarker.FindStringSubmatch(line)
			switch {
			case m == nil:
				b.WriteString(line + "\n")
			case m[2] == "fails":
				fmt.Fprintf(&b, "guide_fails %s\n", shellQuote(m[1]))
			default:
				fmt.Fprintf(&b, "guide_prints %s %s\n", shellQuote(m[1]), shellQuote(m[3]))
			}
		}
	}
	b.WriteString(": == the guide ran to its end\n")
	return b.String()
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func TestGuideScriptMarkers(t *testing.T) {
	got := guideScript([]guideBlock{{line: 7, text: "echo hi                 # prints: hi\nfalse   # fails\n" +
		"cat > f <<'EOF'\nx = 1   # fails\nEOF\ntrue\n"}})
	for _, want := range []string{
		"guide_prints 'echo hi' 'hi'\n",
		"guide_fails 'false'\n",
		"x = 1   # fails\nEOF\ntrue\n", // inside a heredoc nothing is rewritten
		": == docs/GUIDE.md line 7\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("script lacks %q:\n%s", want, got)
		}
	}
	// The helpers must really check: run the script's preamble with a failing expectation.
	for _, body := range []string{"guide_fails true\n", "guide_prints 'echo a' 'b'\n"} {
		script := guideScript(nil)
		script = strings.Replace(script, ": == the guide ran to its end\n", body, 1)
		if err := exec.Command("bash", "-c", script).Run(); err == nil {
			t.Errorf("%q passed; it must fail", body)
		}
	}
}

// TestGuide runs every shell block of docs/GUIDE.md, in order, as root, in private mount, network
// and PID namespaces: the guide's paths are overlays (guideOverlays), its KMIP server and metrics
// port live on a private loopback, and every process it leaves running dies with the namespace.
// The guide installs kmipfs with make install from this source tree, so the commands are the ones
// a reader runs, on the binary this tree builds.
func TestGuide(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("KMIPFS_TEST_DISALLOW_SKIP") != "" {
			t.Fatal("the guide's commands run as root")
		}
		t.Skip("the guide's commands run as root")
	}
	if k := testStoreKind(t); k != "local" {
		// The guide's commands do not depend on the store the other tests are pointed at: its config
		// names its own (local) store, so under KMIPFS_TEST_STORE=s3 it would run the same again.
		t.Skipf("the guide runs once, on its own config; KMIPFS_TEST_STORE=%s does not change it", k)
	}
	for _, tool := range []string{"unshare", "pykmip-server", "setfattr", "curl", "systemd-analyze", "make"} {
		requireTool(t, tool)
	}
	blocks := readGuideBlocks(t, guidePath)
	if len(blocks) < 10 {
		t.Fatalf("%s has %d sh blocks; the guide's commands went missing", guidePath, len(blocks))
	}
	repo, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	script := filepath.Join(tmp, "guide.sh")
	if err := os.WriteFile(script, []byte("cd "+shellQuote(repo)+"\n"+guideScript(blocks)), 0o755); err != nil {
		t.Fatal(err)
	}
	var ns strings.Builder
	ns.WriteString("set -euo pipefail\nip link set lo up\n")
	for _, d := range guideOverlays {
		up := filepath.Join(tmp, "overlay", strings.ReplaceAll(strings.Trim(d, "/"), "/", "-"))
		fmt.Fprintf(&ns, "mkdir -p %[1]s/upper %[1]s/work && mount -t overlay overlay -o lowerdir=%[2]s,upperdir=%[1]s/upper,workdir=%[1]s/work %[2]s\n", up, d)
	}
	fmt.Fprintf(&ns, "exec bash %s\n", shellQuote(script))

	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "unshare", "--mount", "--propagation", "private", "--net",
		"--pid", "--fork", "--mount-proc", "bash", "-c", ns.String())
	cmd.Env = append(os.Environ(), "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:"+os.Getenv("PATH"))
	start := time.Now()
	out, err := cmd.CombinedOutput()
	t.Logf("the guide ran for %v", time.Since(start).Round(time.Millisecond))
	if err != nil || !strings.Contains(string(out), ": == the guide ran to its end") {
		t.Fatalf("the guide's commands failed (%v); the trace, last command last:\n%s", err, tail(string(out), 150))
	}
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
