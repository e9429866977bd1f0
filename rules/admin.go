package rules

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"gopkg.in/yaml.v3"
)

// MinAdminTokenBytes is the shortest admin token accepted: a short one can
// be guessed by anything that reaches the admin port.
const MinAdminTokenBytes = 16

// admin decodes `admin:`, an address or {listen, tokenFile}.
func (l *loader) admin(n *yaml.Node, c *Config) {
	c.Admin = DefaultAdmin
	switch n = resolve(n); {
	case n == nil:
	case n.Kind == yaml.ScalarNode:
		c.Admin = l.str(n, "admin", DefaultAdmin)
	case n.Kind == yaml.MappingNode:
		f := l.fields(n, "admin", "listen", "tokenFile")
		c.Admin = l.str(f["listen"], "admin.listen", DefaultAdmin)
		c.AdminTokenFile = l.filePath(f["tokenFile"], "admin.tokenFile", "")
	default:
		l.errf("admin", "expected an address or a mapping with listen and tokenFile")
	}
}

func (l *loader) checkAdmin(c *Config) {
	field := "admin"
	if l.has("admin.listen") {
		field = "admin.listen"
	}
	l.checkListen(c.Admin, field)
	switch {
	case c.AdminTokenFile != "":
		if _, err := readAdminToken(c.AdminTokenFile); err != nil {
			l.errf("admin.tokenFile", "%v", err)
		}
	case l.has("admin.tokenFile"):
		l.errf("admin.tokenFile", "empty path")
	}
}

// AdminToken reads the admin API's token from AdminTokenFile, trimmed of
// surrounding whitespace. It reads the file on every call, so a rotated
// token takes effect; "" and no error when the config sets no tokenFile.
func (c *Config) AdminToken() (string, error) {
	if c.AdminTokenFile == "" {
		return "", nil
	}
	return readAdminToken(c.AdminTokenFile)
}

// readAdminToken's errors never quote the file's content.
func readAdminToken(path string) (string, error) {
	b, err := readSmallFile(path, 64<<10)
	if err != nil {
		return "", fmt.Errorf("cannot read %s: %w", path, err)
	}
	tok := strings.TrimSpace(string(b))
	if len(tok) < MinAdminTokenBytes {
		return "", fmt.Errorf("token is %d bytes after trimming whitespace; want at least %d", len(tok), MinAdminTokenBytes)
	}
	return tok, nil
}

// readSmallFile reads at most max bytes of a regular file; errors are the
// bare cause ("no such file or directory"), for messages that name the path.
func readSmallFile(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, unwrapPath(err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil {
		return nil, unwrapPath(err)
	} else if fi.IsDir() {
		return nil, errors.New("is a directory")
	}
	b, err := io.ReadAll(io.LimitReader(f, max))
	if err != nil {
		return nil, unwrapPath(err)
	}
	return b, nil
}

func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
