-- Berth schema, version 7 (SQLite): webhook deliveries no longer copy the
-- receiver's URL.
--
-- migrations/postgres/0007_webhook_url_out_of_queue.sql mirrors this file.
--
-- A webhook URL is often the credential itself (chat webhooks carry it in
-- the path or query). The deliverer has always sent to the URL configured
-- for the delivery's hook (by name), so the copy in every row was only a
-- plain-text duplicate of a secret: it goes. Errors recorded before now
-- embedded the URL ("error sending request for url (...)"); those are
-- forgotten. Nothing indexes `url`, so SQLite drops it in place.
ALTER TABLE webhook_deliveries DROP COLUMN url;

UPDATE webhook_deliveries SET last_error = NULL WHERE last_error LIKE '%://%';
