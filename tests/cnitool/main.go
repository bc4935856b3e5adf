// cnitool drives CNI plugins through libcni the way a container runtime does.
//
// Usage: cnitool add|check|del <network name> <netns path>
//
// Environment:
//
//	NETCONFPATH        directory holding *.conflist / *.conf (default /etc/cni/net.d)
//	CNI_PATH           plugin search path, colon separated (default /opt/cni/bin)
//	CNI_IFNAME         interface name inside the namespace (default eth0)
//	CNI_ARGS           "K1=V1;K2=V2" passed as CNI_ARGS
//	CAP_ARGS           JSON object of capability arguments (runtimeConfig)
//	CNI_CONTAINERID    container id (default derived from the netns path)
//	CNITOOL_CACHE_DIR  libcni result cache directory (default libcni's /var/lib/cni)
//	CNITOOL_TIMEOUT    seconds before the operation is abandoned (default 120)
//
// On success "add" prints the result JSON on stdout. On failure the error goes to stderr
// (a plugin's CNI error as its JSON object) and the exit code is 1; usage errors exit 2.
package main

import (
	"context"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
)

const usage = "usage: cnitool add|check|del <network name> <netns path>\n"

func envOr(key, fallback string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return fallback
}

// parseCNIArgs turns "K1=V1;K2=V2" into libcni's key/value pairs.
func parseCNIArgs(raw string) ([][2]string, error) {
	var out [][2]string
	for _, item := range strings.Split(raw, ";") {
		if item == "" {
			continue
		}
		kv := strings.SplitN(item, "=", 2)
		if len(kv) != 2 {
			return nil, fmt.Errorf("CNI_ARGS item %q is not KEY=VALUE", item)
		}
		out = append(out, [2]string{kv[0], kv[1]})
	}
	return out, nil
}

// containerID is stable per namespace path so that add and del of one pod agree.
func containerID(netns string) string {
	if id := os.Getenv("CNI_CONTAINERID"); id != "" {
		return id
	}
	sum := sha512.Sum512([]byte(netns))
	return "cnitool-" + hex.EncodeToString(sum[:])[:20]
}

func fail(err error) int {
	var cniErr *types.Error
	if errors.As(err, &cniErr) {
		if data, jerr := json.Marshal(cniErr); jerr == nil {
			fmt.Fprintln(os.Stderr, string(data))
			return 1
		}
	}
	fmt.Fprintf(os.Stderr, "cnitool: %v\n", err)
	return 1
}

func run(args []string) int {
	if len(args) != 3 {
		fmt.Fprint(os.Stderr, usage)
		return 2
	}
	op, netName, netns := args[0], args[1], args[2]
	if op != "add" && op != "check" && op != "del" {
		fmt.Fprint(os.Stderr, usage)
		return 2
	}
	netns, err := filepath.Abs(netns)
	if err != nil {
		return fail(err)
	}

	list, err := libcni.LoadConfList(envOr("NETCONFPATH", "/etc/cni/net.d"), netName)
	if err != nil {
		return fail(fmt.Errorf("loading network %q: %w", netName, err))
	}

	cniArgs, err := parseCNIArgs(os.Getenv("CNI_ARGS"))
	if err != nil {
		return fail(err)
	}
	capArgs := map[string]interface{}{}
	if raw := os.Getenv("CAP_ARGS"); raw != "" {
		if err := json.Unmarshal([]byte(raw), &capArgs); err != nil {
			return fail(fmt.Errorf("CAP_ARGS is not a JSON object: %w", err))
		}
	}
	timeout, err := strconv.ParseFloat(envOr("CNITOOL_TIMEOUT", "120"), 64)
	if err != nil || timeout <= 0 {
		return fail(fmt.Errorf("CNITOOL_TIMEOUT %q is not a positive number", os.Getenv("CNITOOL_TIMEOUT")))
	}

	paths := filepath.SplitList(envOr("CNI_PATH", "/opt/cni/bin"))
	cni := libcni.NewCNIConfigWithCacheDir(paths, os.Getenv("CNITOOL_CACHE_DIR"), nil)
	rt := &libcni.RuntimeConf{
		ContainerID:    containerID(netns),
		NetNS:          netns,
		IfName:         envOr("CNI_IFNAME", "eth0"),
		Args:           cniArgs,
		CapabilityArgs: capArgs,
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(timeout*float64(time.Second)))
	defer cancel()

	switch op {
	case "add":
		result, err := cni.AddNetworkList(ctx, list, rt)
		if err != nil {
			return fail(err)
		}
		if result != nil {
			if err := result.Print(); err != nil {
				return fail(err)
			}
		}
	case "check":
		if err := cni.CheckNetworkList(ctx, list, rt); err != nil {
			return fail(err)
		}
	case "del":
		if err := cni.DelNetworkList(ctx, list, rt); err != nil {
			return fail(err)
		}
	}
	return 0
}

func main() {
	os.Exit(run(os.Args[1:]))
}
