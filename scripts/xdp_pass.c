// An XDP program that passes every frame (scripts/lib.sh `xdp_pass`). Attached to a veth,
// it makes the kernel take TSO/GSO away from the veth's peer (veth_fix_features), so a
// kernel host on the other end segments its TCP itself before the veth.
// Built with: clang -O2 -target bpf -c xdp_pass.c (no kernel headers needed).
struct xdp_md;

__attribute__((section("xdp"), used)) int xdp_pass(struct xdp_md *ctx) {
  (void)ctx;
  return 2; // XDP_PASS
}

char _license[] __attribute__((section("license"), used)) = "GPL";
