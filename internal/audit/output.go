package audit

import (
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"path/filepath"
	"strings"
	"unicode/utf8"
)

// TableOptions shapes the human-readable report.
type TableOptions struct {
	Color bool
	// Width wraps the last column; 0 does not wrap.
	Width int
	// Min hides findings below this severity.
	Min Severity
}

var sevColor = [...]string{
	Critical: "\x1b[1;97;41m", // bold white on red
	High:     "\x1b[1;31m",
	Medium:   "\x1b[33m",
	Low:      "\x1b[36m",
	Info:     "\x1b[2m",
}

const colorReset = "\x1b[0m"

// where is the short location of a finding for the table.
func where(e Evidence) string {
	switch {
	case e.Command != "":
		return "$ " + e.Command
	case e.Line > 0:
		return fmt.Sprintf("%s:%d", e.File, e.Line)
	case e.Default:
		return e.File + " (default)"
	}
	return e.File
}

// WriteTable writes the report as a table, then why and how to fix each
// rule that fired.
func WriteTable(w io.Writer, r *Report, o TableOptions) error {
	ew := &errWriter{w: w}
	var shown []Finding
	for _, f := range r.Findings {
		if f.Severity >= o.Min {
			shown = append(shown, f)
		}
	}
	var found []string
	for _, f := range r.Files {
		if f.Found {
			found = append(found, fmt.Sprintf("%s (%s)", f.Path, f.Layer))
		}
	}
	if len(found) == 0 {
		found = append(found, "none: Nix's defaults apply")
	}
	ew.printf("closet audit of %s\nconfiguration read: %s\n", r.Root, strings.Join(found, ", "))
	if r.Scan != nil {
		ew.printf("store scan: %s, %d paths, %d files, %d bytes read in %.2fs\n",
			r.Scan.Dir, r.Scan.Paths, r.Scan.Files, r.Scan.Read, r.Scan.Elapsed.Seconds())
	}
	ew.printf("\n")
	if len(shown) == 0 {
		ew.printf("No findings")
		if o.Min > Info {
			ew.printf(" at %s or above", o.Min)
		}
		ew.printf(".\n")
		return ew.err
	}

	whereW := len("WHERE")
	for _, f := range shown {
		whereW = max(whereW, utf8.RuneCountInString(where(f.Evidence)))
	}
	whereW = min(whereW, 56)
	indent := 8 + 2 + 6 + 2 + whereW + 2
	textW := 0
	if o.Width > 0 {
		textW = max(o.Width-indent, 30)
	}
	ew.printf("%-8s  %-6s  %-*s  %s\n", "SEVERITY", "ID", whereW, "WHERE", "FINDING")
	for _, f := range shown {
		sev := fmt.Sprintf("%-8s", f.Severity)
		if o.Color {
			sev = sevColor[f.Severity] + sev + colorReset
		}
		loc := where(f.Evidence)
		if n := utf8.RuneCountInString(loc); n > whereW {
			loc = "…" + string([]rune(loc)[n-whereW+1:])
		}
		ew.printf("%s  %-6s  %-*s  ", sev, f.ID, whereW, loc)
		lines := []string{f.Title}
		if v := f.Evidence.Value; v != "" {
			lines = append(lines, v)
		}
		if f.Detail != "" {
			lines = append(lines, f.Detail)
		}
		first := true
		for _, l := range lines {
			for _, wl := range wrap(l, textW) {
				if !first {
					ew.printf("%s", strings.Repeat(" ", indent))
				}
				ew.printf("%s\n", wl)
				first = false
			}
		}
	}

	counts := make([]string, 0, 5)
	for s := Critical; s >= Info; s-- {
		counts = append(counts, fmt.Sprintf("%d %s", r.Summary[s.String()], s))
	}
	ew.printf("\n%d findings: %s.\n", len(r.Findings), strings.Join(counts, ", "))
	if hidden := len(r.Findings) - len(shown); hidden > 0 {
		ew.printf("%d below %s not shown (--min-severity).\n", hidden, o.Min)
	}

	ew.printf("\nWhy each matters and how to fix it:\n")
	seen := map[string]bool{}
	for _, f := range shown {
		if seen[f.ID] {
			continue
		}
		seen[f.ID] = true
		ew.printf("\n  %s  %s\n", f.ID, f.Title)
		for i, l := range wrap(f.Why, noteWidth(o.Width)) {
			ew.printf("  %-6s  %s\n", map[bool]string{true: "why", false: ""}[i == 0], l)
		}
		for i, l := range wrap(f.Fix, noteWidth(o.Width)) {
			ew.printf("  %-6s  %s\n", map[bool]string{true: "fix", false: ""}[i == 0], l)
		}
	}
	return ew.err
}

// noteWidth is the width of the why/fix notes: the terminal's, or 80.
func noteWidth(width int) int {
	if width <= 0 {
		width = 80
	}
	return max(width-12, 40)
}

// wrap breaks s into lines of at most width runes at spaces; width 0 keeps
// one line.
func wrap(s string, width int) []string {
	if width <= 0 || utf8.RuneCountInString(s) <= width {
		return []string{s}
	}
	var out []string
	var line strings.Builder
	n := 0
	for _, word := range strings.Fields(s) {
		wl := utf8.RuneCountInString(word)
		if n > 0 && n+1+wl > width {
			out = append(out, line.String())
			line.Reset()
			n = 0
		}
		if n > 0 {
			line.WriteByte(' ')
			n++
		}
		line.WriteString(word)
		n += wl
	}
	if n > 0 {
		out = append(out, line.String())
	}
	return out
}

type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) printf(format string, a ...any) {
	if e.err == nil {
		_, e.err = fmt.Fprintf(e.w, format, a...)
	}
}

// WriteJSON writes the report as one indented JSON document.
func WriteJSON(w io.Writer, r *Report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(struct {
		Version int `json:"version"`
		*Report
	}{1, r})
}

// SARIF 2.1.0, the subset code-scanning services read.
type sarifLog struct {
	Schema  string     `json:"$schema"`
	Version string     `json:"version"`
	Runs    []sarifRun `json:"runs"`
}

type sarifRun struct {
	Tool    sarifTool     `json:"tool"`
	Results []sarifResult `json:"results"`
}

type sarifTool struct {
	Driver sarifDriver `json:"driver"`
}

type sarifDriver struct {
	Name           string      `json:"name"`
	Version        string      `json:"version,omitempty"`
	InformationURI string      `json:"informationUri,omitempty"`
	Rules          []sarifRule `json:"rules"`
}

type sarifText struct {
	Text string `json:"text"`
}

type sarifRule struct {
	ID                   string            `json:"id"`
	Name                 string            `json:"name"`
	ShortDescription     sarifText         `json:"shortDescription"`
	FullDescription      sarifText         `json:"fullDescription"`
	Help                 sarifText         `json:"help"`
	DefaultConfiguration sarifConfig       `json:"defaultConfiguration"`
	Properties           map[string]string `json:"properties"`
}

type sarifConfig struct {
	Level string `json:"level"`
}

type sarifResult struct {
	RuleID     string            `json:"ruleId"`
	RuleIndex  int               `json:"ruleIndex"`
	Level      string            `json:"level"`
	Message    sarifText         `json:"message"`
	Locations  []sarifLocation   `json:"locations,omitempty"`
	Properties map[string]string `json:"properties,omitempty"`
}

type sarifLocation struct {
	PhysicalLocation sarifPhysical `json:"physicalLocation"`
}

type sarifPhysical struct {
	ArtifactLocation sarifArtifact `json:"artifactLocation"`
	Region           *sarifRegion  `json:"region,omitempty"`
}

type sarifArtifact struct {
	URI string `json:"uri"`
}

type sarifRegion struct {
	StartLine int `json:"startLine"`
}

// WriteSARIF writes the report as a SARIF 2.1.0 log with one run.
func WriteSARIF(w io.Writer, r *Report, toolVersion string) error {
	index := map[string]int{}
	rules := make([]sarifRule, 0, len(Rules))
	for i, ru := range Rules {
		index[ru.ID] = i
		rules = append(rules, sarifRule{
			ID: ru.ID, Name: ru.Name,
			ShortDescription:     sarifText{ru.Title},
			FullDescription:      sarifText{ru.Why},
			Help:                 sarifText{"Fix: " + ru.Fix},
			DefaultConfiguration: sarifConfig{ru.Severity.SARIFLevel()},
			Properties: map[string]string{
				"security-severity": ru.Severity.securityScore(),
				"severity":          ru.Severity.String(),
			},
		})
	}
	results := make([]sarifResult, 0, len(r.Findings))
	for _, f := range r.Findings {
		msg := f.Title
		if f.Evidence.Value != "" {
			msg += ": " + f.Evidence.Value
		}
		if f.Evidence.Default {
			msg += " (Nix's default)"
		}
		if f.Detail != "" {
			msg += ". " + f.Detail
		}
		if f.Evidence.Command != "" {
			msg += " (seen with `" + f.Evidence.Command + "`)"
		}
		msg += ". Fix: " + f.Fix
		res := sarifResult{
			RuleID: f.ID, RuleIndex: index[f.ID], Level: f.Severity.SARIFLevel(),
			Message:    sarifText{msg},
			Properties: map[string]string{"severity": f.Severity.String()},
		}
		if f.Evidence.File != "" && filepath.IsAbs(f.Evidence.File) {
			loc := sarifLocation{PhysicalLocation: sarifPhysical{ArtifactLocation: sarifArtifact{URI: fileURI(f.Evidence.File)}}}
			if f.Evidence.Line > 0 {
				loc.PhysicalLocation.Region = &sarifRegion{StartLine: f.Evidence.Line}
			}
			res.Locations = []sarifLocation{loc}
		}
		results = append(results, res)
	}
	log := sarifLog{
		Schema:  "https://json.schemastore.org/sarif-2.1.0.json",
		Version: "2.1.0",
		Runs: []sarifRun{{
			Tool:    sarifTool{Driver: sarifDriver{Name: "closet audit", Version: toolVersion, InformationURI: "https://github.com/closet-sandbox/closet", Rules: rules}},
			Results: results,
		}},
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(log)
}

func fileURI(p string) string {
	return (&url.URL{Scheme: "file", Path: filepath.ToSlash(p)}).String()
}
