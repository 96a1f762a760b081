import { fileURLToPath } from 'node:url';
import { resolve } from 'node:path';
import { mkdirSync } from 'node:fs';

export const e2eDir = fileURLToPath(new URL('..', import.meta.url));
export const repoRoot = resolve(e2eDir, '..');
export const artifactsDir = resolve(process.env.DUET_ARTIFACTS || resolve(repoRoot, 'test-artifacts'));
mkdirSync(artifactsDir, { recursive: true });
