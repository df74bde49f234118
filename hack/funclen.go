//go:build ignore

// funclen prints every non-test function longer than -min lines (from func
// to closing brace) in the Go files under the given directories, longest
// first:
//
//	go run hack/funclen.go -min 60 $(ls -d */ | grep -v wasmhost)
package main

import (
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"sort"
	"strings"
)

func main() {
	min := flag.Int("min", 60, "")
	flag.Parse()
	type row struct {
		n    int
		name string
	}
	var rows []row
	for _, root := range flag.Args() {
		filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
				return err
			}
			fset := token.NewFileSet()
			f, err := parser.ParseFile(fset, p, nil, 0)
			if err != nil {
				return err
			}
			for _, decl := range f.Decls {
				fd, ok := decl.(*ast.FuncDecl)
				if !ok || fd.Body == nil {
					continue
				}
				n := fset.Position(fd.End()).Line - fset.Position(fd.Pos()).Line + 1
				if n > *min {
					name := fd.Name.Name
					if fd.Recv != nil {
						t := fd.Recv.List[0].Type
						if s, ok := t.(*ast.StarExpr); ok {
							t = s.X
						}
						if id, ok := t.(*ast.Ident); ok {
							name = id.Name + "." + name
						}
					}
					rows = append(rows, row{n, fmt.Sprintf("%s:%d %s", p, fset.Position(fd.Pos()).Line, name)})
				}
			}
			return nil
		})
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].n > rows[j].n })
	for _, r := range rows {
		fmt.Printf("%4d %s\n", r.n, r.name)
	}
}
