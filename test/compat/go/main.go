// Compatibility matrix, Go pgx (issue 23 item 1). Usage: go run . URL SCHEMA
// pgx's default: extended protocol with its statement cache (a query prepared once, reused after).
package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

func main() {
	ctx := context.Background()
	url, schema := os.Args[1], os.Args[2]
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	defer conn.Close(ctx)
	q := "SELECT id, name, email, ssn FROM " + schema + ".customers WHERE id > $1 ORDER BY id"
	for i := 0; i < 6; i++ {
		rows, err := conn.Query(ctx, q, 0)
		if err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		line := "rows"
		for rows.Next() {
			var id int32
			var name, email, ssn string
			if err := rows.Scan(&id, &name, &email, &ssn); err != nil {
				fmt.Println("error", err)
				os.Exit(1)
			}
			line += fmt.Sprintf(" | %d,%s,%s,%s", id, name, email, ssn)
		}
		if rows.Err() != nil {
			fmt.Println("error", rows.Err())
			os.Exit(1)
		}
		fmt.Println(line)
	}
	_, err = conn.Exec(ctx, "DROP TABLE "+schema+".victim")
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		fmt.Println("denied", pgErr.Code, pgErr.Message)
	}
	var one int
	if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err == nil {
		fmt.Println("after", one)
	}
}
