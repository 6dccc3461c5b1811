-- Seed for zero-to-production (written for the corpus): 100k subscribers
-- (90% confirmed), one confirmation token each, 50 past newsletter issues.
-- The admin user comes from its own migration (seed_user).
BEGIN;
INSERT INTO subscriptions (id, email, name, subscribed_at, status)
SELECT md5('sub' || g)::uuid, 'subscriber' || g || '@example.com', 'Subscriber ' || g,
       now() - (g || ' minutes')::interval,
       CASE WHEN g % 10 = 0 THEN 'pending_confirmation' ELSE 'confirmed' END
FROM generate_series(1, 100000) g;

INSERT INTO subscription_tokens (subscription_token, subscriber_id)
SELECT 'tok' || lpad(g::text, 22, '0'), md5('sub' || g)::uuid FROM generate_series(1, 100000) g;

INSERT INTO newsletter_issues (newsletter_issue_id, title, text_content, html_content, published_at)
SELECT md5('issue' || g)::uuid, 'Issue ' || g, repeat('Plain text body. ', 40), repeat('<p>HTML body.</p>', 40), (now() - (g || ' days')::interval)::text
FROM generate_series(1, 50) g;
COMMIT;
