"""The checks, one module per part of the Kubernetes network model. Sources name the seed
documents (../shared/seeds/) whose claims the checks test."""

DOC000 = "000_40b3725ea6ba87c3.txt"   # container/pod/node communication, Service, kube-proxy, kube-dns
DOC001 = "001_744cb8516ce02ae8.txt"   # flannel routes across nodes, env-var and DNS discovery
DOC002 = "002_f4d7489521384418.txt"   # guestbook, Service/Endpoints, NodePort/LoadBalancer, pause
DOC003 = "003_674b7e7d19bea0a3.txt"   # like 000, plus overlay vs routed, flannel
DOC004 = "004_76ca7e4d1fb89e27.txt"   # pause, bridge, flannel udp/vxlan, SNAT egress, NodePort, LB
