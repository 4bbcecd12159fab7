#!/usr/bin/env bash
# Removes what interrupted test or bench runs (a killed test host cannot run its teardown) left
# on this machine: their private containerds and shims (with the sessions under them), network
# namespaces, CNI iptables rules and bridges of the test networks, and their /tmp folders.
# Touches only the test prefixes (/tmp/ka?-*, /tmp/kat-*, networks kat*/kapi*/kcli*/kabench*).
set -u
for dir in /tmp/kaa-* /tmp/kab-* /tmp/kac-* /tmp/kas-* /tmp/kae-* /tmp/kat-* /tmp/kapi-* /tmp/kcli-*; do
  [ -d "$dir" ] || continue
  for pid in $(pgrep -f -- "-address $dir/" 2>/dev/null) $(pgrep -f -- "containerd --config $dir/" 2>/dev/null); do
    for child in $(pgrep -P "$pid" 2>/dev/null); do pkill -9 -P "$child" 2>/dev/null; kill -9 "$child" 2>/dev/null; done
    kill -9 "$pid" 2>/dev/null
  done
  pkill -9 -f -- "$dir/" 2>/dev/null
  grep " $dir" /proc/self/mountinfo | awk '{print $5}' | sort -r | xargs -r -n1 umount -l 2>/dev/null
  rm -rf "$dir"
done
for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^(kat[0-9]+|kapi[0-9]+|kcli[0-9]+|kab[0-9]*)-'); do
  ip netns del "$ns"
done
for table in nat filter; do
  for chain in $(iptables -w -t "$table" -S | grep -E 'name: \\"(kat[0-9]+|kapi[0-9]+|kcli[0-9]+|kabench[0-9]*)\\"' | grep -oE -- '-j CNI-(DN-)?[0-9a-f]+' | awk '{print $2}' | sort -u); do
    iptables -w -t "$table" -S | grep -- "-j $chain" | sed 's/^-A/-D/' | while read -r rule; do eval iptables -w -t "$table" "$rule"; done
    iptables -w -t "$table" -F "$chain" 2>/dev/null; iptables -w -t "$table" -X "$chain" 2>/dev/null
  done
done
for family in inet bridge; do
  for table in $(nft list tables "$family" 2>/dev/null | awk '{print $3}' | grep -E '^kata_agent_(kat[0-9]+|kapi[0-9]+|kcli[0-9]+|kabench[0-9]*)$'); do
    nft delete table "$family" "$table"
  done
done
for link in $(ip -o link show type bridge 2>/dev/null | awk -F': ' '{print $2}' | grep -E '^(kat[0-9]+|kapi[0-9]+|kcli[0-9]+|kabench[0-9]*)$'); do
  ip link del "$link"
done
