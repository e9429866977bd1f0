// Command vaultdev builds HashiCorp Vault's real server binary for tests only.
// It is a separate module so that Vault's server (BUSL) never enters
// credproxy's own go.mod or its Docker image.
package main

import (
	"os"

	"github.com/hashicorp/vault/command"
)

func main() { os.Exit(command.Run(os.Args[1:])) }
