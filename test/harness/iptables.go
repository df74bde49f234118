package harness

import (
	"bufio"
	"bytes"
	"os/exec"
	"strings"
)

type iptablesRule struct {
	table string
	args  []string // as iptables-save prints them, from "-A"
	chain string   // a CNI- chain the rule jumps to
}

// iptablesRules lists the rules, in every table, that name the network or
// its subnet (the bridge plugin tags its rules with a comment holding the
// network's name).
func (n *CNINetwork) iptablesRules() []iptablesRule {
	out, err := exec.Command("iptables-save").Output()
	if err != nil {
		return []iptablesRule{{table: "?", args: []string{"iptables-save failed: " + err.Error()}}}
	}
	prefix := strings.Join(strings.Split(n.Subnet.IP.String(), ".")[:3], ".") + "."
	var rules []iptablesRule
	table := ""
	s := bufio.NewScanner(bytes.NewReader(out))
	for s.Scan() {
		line := s.Text()
		switch {
		case strings.HasPrefix(line, "*"):
			table = line[1:]
		case strings.HasPrefix(line, "-A ") && (strings.Contains(line, `\"`+n.Name+`\"`) || strings.Contains(line, prefix) || strings.Contains(line, n.Name)):
			r := iptablesRule{table: table, args: splitQuoted(line)}
			for i, a := range r.args {
				if a == "-j" && i+1 < len(r.args) && strings.HasPrefix(r.args[i+1], "CNI-") {
					r.chain = r.args[i+1]
				}
			}
			rules = append(rules, r)
		}
	}
	return rules
}

// splitQuoted splits an iptables-save rule into arguments: words separated
// by spaces, double quotes grouping, backslash escaping the next character.
func splitQuoted(line string) []string {
	var args []string
	var cur strings.Builder
	inQuote, inWord := false, false
	for i := 0; i < len(line); i++ {
		ch := line[i]
		switch {
		case ch == '\\' && i+1 < len(line):
			i++
			cur.WriteByte(line[i])
			inWord = true
		case ch == '"':
			inQuote = !inQuote
			inWord = true
		case ch == ' ' && !inQuote:
			if inWord {
				args = append(args, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteByte(ch)
			inWord = true
		}
	}
	if inWord {
		args = append(args, cur.String())
	}
	return args
}
