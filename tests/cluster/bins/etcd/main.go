// Command etcd is the etcd server the pinned kube-apiserver stores its objects in (make cluster-bins).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
