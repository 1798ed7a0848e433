import { pathToFileURL } from 'node:url';
import { chromium, type Page } from 'playwright-core';
import { tempDir } from '../support.ts';

/** Debian's Chromium (.ci/run installs it when missing). */
export const CHROMIUM = '/usr/bin/chromium';
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

export interface OpenedPage {
  page: Page;
  /** Console errors and uncaught page errors while loading. */
  errors: string[];
  /** Every URL the page requested, the page itself included. */
  requests: string[];
  close: () => Promise<void>;
}

/** Loads a local HTML file in headless Chromium with a fresh profile, recording errors and requests. */
export async function openInChromium(file: string): Promise<OpenedPage> {
  const context = await chromium.launchPersistentContext(tempDir('fisher-merge-chromium-'), { executablePath: CHROMIUM, headless: true, args: ARGS, viewport: { width: 1200, height: 900 } });
  const page = context.pages()[0] ?? await context.newPage();
  const errors: string[] = [];
  const requests: string[] = [];
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('request', (r) => requests.push(r.url()));
  await page.goto(pathToFileURL(file).href, { waitUntil: 'load' });
  return { page, errors, requests, close: () => context.close() };
}

/** Distinct colours in a full-page screenshot, decoded by the browser itself (a blank page has one). */
export async function screenshotColours(page: Page): Promise<number> {
  const png = (await page.screenshot({ fullPage: true })).toString('base64');
  // Runs in the page (the project's types have no DOM, hence a string).
  return page.evaluate(`(async () => {
    const img = new Image();
    img.src = 'data:image/png;base64,${png}';
    await img.decode();
    const canvas = document.createElement('canvas');
    [canvas.width, canvas.height] = [img.width, img.height];
    const ctx = canvas.getContext('2d');
    ctx.drawImage(img, 0, 0);
    const pixels = ctx.getImageData(0, 0, img.width, img.height).data;
    const colours = new Set();
    for (let i = 0; i < pixels.length; i += 4) colours.add((pixels[i] << 16) | (pixels[i + 1] << 8) | pixels[i + 2]);
    return colours.size;
  })()`) as Promise<number>;
}
