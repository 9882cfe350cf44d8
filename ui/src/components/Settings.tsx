import { useState } from "react";
import { getToken, setToken } from "../api";

// Settings holds the API token: with ACLs on, every call needs one, and
// the UI has no other way to authenticate.
export function Settings() {
  const [token, set] = useState(getToken());
  const [saved, setSaved] = useState(false);
  return (
    <section className="settings">
      <h2>Settings</h2>
      <form
        onSubmit={(e) => {
          e.preventDefault();
          setToken(token.trim());
          setSaved(true);
        }}
      >
        <label className="field">
          <span>API token (sent as Authorization: Bearer; kept in this browser's local storage)</span>
          <input type="password" autoComplete="off" value={token} onChange={(e) => {
            set(e.target.value);
            setSaved(false);
          }} />
        </label>
        <button type="submit">Save token</button>
        {saved && <span role="status"> Saved.</span>}
      </form>
    </section>
  );
}
