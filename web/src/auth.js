// Who is signed in, and the session token for each API call.
//
// In production the console is configured (config.json, written at deploy) with the Clerk
// publishable key: Clerk's browser SDK is loaded from the instance's Frontend API and
// `session.getToken()` gives a fresh session token per request. Locally, `scripts/dev` serves a
// config that says `"auth": "dev"` and mints development tokens at /dev/token (signed with the
// repository's development key, which only `scripts/dev`'s API accepts).

let config = { auth: 'dev' };
let clerk = null;
let devUser = null;
let devToken = null; // { token, expires }

export async function start() {
  const response = await fetch('./config.json', { cache: 'no-store' });
  if (response.ok) config = await response.json();
  if (config.clerk_publishable_key) {
    clerk = await loadClerk(config.clerk_publishable_key);
  } else {
    devUser = localStorage.getItem('dev-user');
  }
}

export const signedIn = () => (clerk ? Boolean(clerk.user) : Boolean(devUser));
export const userLabel = () =>
  clerk ? clerk.user?.primaryEmailAddress?.emailAddress ?? clerk.user?.id : devUser;

export async function token() {
  if (clerk) return clerk.session?.getToken();
  if (!devUser) return null;
  if (!devToken || devToken.expires < Date.now() + 60_000) {
    const response = await fetch(`./dev/token?user=${encodeURIComponent(devUser)}`);
    if (!response.ok) throw new Error('The development sign-in is not available here.');
    devToken = { token: await response.text(), expires: Date.now() + 3_000_000 };
  }
  return devToken.token;
}

/** Shows the sign-in: Clerk's own component, or the development form. */
export function mountSignIn(el, onDevSignIn) {
  if (clerk) {
    clerk.mountSignIn(el);
    clerk.addListener(({ user }) => user && location.reload());
    return;
  }
  onDevSignIn(el, (user) => {
    localStorage.setItem('dev-user', user);
    devUser = user;
    devToken = null;
  });
}

export async function signOut() {
  if (clerk) return clerk.signOut();
  localStorage.removeItem('dev-user');
  devUser = null;
  devToken = null;
}

// The Frontend API host is in the publishable key: pk_(test|live)_<base64 of "host$">.
function loadClerk(publishableKey) {
  const host = atob(publishableKey.split('_')[2]).replace(/\$$/, '');
  return new Promise((resolve, reject) => {
    const script = document.createElement('script');
    script.src = `https://${host}/npm/@clerk/clerk-js@5/dist/clerk.browser.js`;
    script.async = true;
    script.crossOrigin = 'anonymous';
    script.dataset.clerkPublishableKey = publishableKey;
    script.onerror = () => reject(new Error('Could not load the sign-in (Clerk).'));
    script.onload = () => window.Clerk.load().then(() => resolve(window.Clerk), reject);
    document.head.append(script);
  });
}
