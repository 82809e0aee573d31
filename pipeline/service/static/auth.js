// The service's token, for the pages (a service off loopback requires one). An <img> cannot send an Authorization
// header, so the pages keep the token in a cookie (SameSite=Strict: no other site's page can send it): on the first
// 401 they ask for it once, set the cookie and reload, and every request after carries it.
"use strict";
(() => {
  const plain = window.fetch.bind(window);
  let asked = false; // once per page: the pages poll, and a cancelled prompt must not come back every second
  window.fetch = async (input, init) => {
    const r = await plain(input, init);
    if (r.status !== 401 || asked) return r;
    asked = true;
    const token = window.prompt("This service needs its access token (the pipeline config's http.token):");
    if (token) {
      document.cookie = `reid_token=${encodeURIComponent(token)}; path=/; SameSite=Strict`;
      location.reload();
    }
    return r;
  };
})();
