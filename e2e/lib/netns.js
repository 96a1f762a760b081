// Network namespaces for firewalled users: one
// server namespace with a bridge, client namespaces on veth pairs into it,
// nftables rules per client. Names carry our pid, so leftovers of a killed
// run can be recognised and removed; everything is deleted on cleanup.
import { execFileSync } from 'node:child_process';

function sh(args, { input, allowFail = false } = {}) {
  try {
    return execFileSync(args[0], args.slice(1), { input, stdio: ['pipe', 'pipe', 'pipe'] }).toString();
  } catch (e) {
    if (allowFail) return null;
    throw new Error(`${args.join(' ')} failed: ${e.stderr ? e.stderr.toString().trim() : e.message}`);
  }
}

function alive(pid) {
  try { process.kill(pid, 0); return true; } catch (e) { return e.code === 'EPERM'; }
}

/** Deletes namespaces left by runs whose process is gone. */
export function sweepStale() {
  const out = sh(['ip', 'netns', 'list'], { allowFail: true }) || '';
  for (const line of out.split('\n')) {
    const name = line.split(' ')[0];
    const m = name.match(/^de2e(\d+)[a-z]/);
    if (m && !alive(Number(m[1]))) sh(['ip', 'netns', 'del', name], { allowFail: true });
  }
}

/** Whether this process may create namespaces (root with iproute2 and nft). */
export function canUseNetns() {
  if (process.getuid && process.getuid() !== 0) return 'not root';
  if (sh(['ip', '-V'], { allowFail: true }) === null) return 'ip (iproute2) missing';
  if (sh(['nft', '--version'], { allowFail: true }) === null) return 'nft (nftables) missing';
  return null;
}

/**
 * @param {string[]} clients names of client namespaces to create (short, [a-z])
 * @returns topology with .server {ns, ip}, .clients {name: {ns, ip}}, .nft(name, rules), .cleanup()
 */
export function createTopology(clients) {
  sweepStale();
  const tag = `de2e${process.pid}`;
  const subnet = `10.200.${(process.pid % 200) + 20}`;
  const server = { ns: `${tag}s`, ip: `${subnet}.1` };
  const created = [];
  const topo = {
    server,
    clients: {},
    cleanup() {
      for (const ns of created.reverse()) sh(['ip', 'netns', 'del', ns], { allowFail: true });
      created.length = 0;
    },
    /**
     * Replaces the client's filter with the given nft rules (strings after `add rule inet fw out`);
     * `input` rules, if any, filter what the client receives.
     */
    firewall(name, rules, { input = [] } = {}) {
      const ns = topo.clients[name].ns;
      let script = 'table inet fw\ndelete table inet fw\ntable inet fw {\n  chain out {\n    type filter hook output priority 0; policy accept;\n';
      for (const r of rules) script += `    ${r}\n`;
      script += '  }\n  chain in {\n    type filter hook input priority 0; policy accept;\n';
      for (const r of input) script += `    ${r}\n`;
      script += '  }\n}\n';
      sh(['ip', 'netns', 'exec', ns, 'nft', '-f', '-'], { input: script });
      return sh(['ip', 'netns', 'exec', ns, 'nft', 'list', 'ruleset']);
    },
  };
  const onExit = () => topo.cleanup();
  process.once('exit', onExit);
  for (const sig of ['SIGINT', 'SIGTERM']) process.once(sig, () => { topo.cleanup(); process.exit(130); });
  try {
    sh(['ip', 'netns', 'add', server.ns]);
    created.push(server.ns);
    sh(['ip', '-n', server.ns, 'link', 'set', 'lo', 'up']);
    sh(['ip', '-n', server.ns, 'link', 'add', 'br0', 'type', 'bridge']);
    sh(['ip', '-n', server.ns, 'addr', 'add', `${server.ip}/24`, 'dev', 'br0']);
    sh(['ip', '-n', server.ns, 'link', 'set', 'br0', 'up']);
    clients.forEach((name, i) => {
      const ns = `${tag}${name}`;
      const ip = `${subnet}.${10 + i}`;
      // Interface names: at most 15 characters.
      const a = `v${process.pid % 100000}${name[0]}s`;
      const b = `v${process.pid % 100000}${name[0]}c`;
      sh(['ip', 'netns', 'add', ns]);
      created.push(ns);
      sh(['ip', '-n', ns, 'link', 'set', 'lo', 'up']);
      sh(['ip', 'link', 'add', a, 'netns', server.ns, 'type', 'veth', 'peer', 'name', b, 'netns', ns]);
      sh(['ip', '-n', server.ns, 'link', 'set', a, 'master', 'br0']);
      sh(['ip', '-n', server.ns, 'link', 'set', a, 'up']);
      sh(['ip', '-n', ns, 'addr', 'add', `${ip}/24`, 'dev', b]);
      sh(['ip', '-n', ns, 'link', 'set', b, 'up']);
      topo.clients[name] = { ns, ip };
    });
  } catch (e) {
    topo.cleanup();
    throw e;
  }
  return topo;
}
