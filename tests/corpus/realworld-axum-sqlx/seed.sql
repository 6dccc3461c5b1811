-- Seed for realworld-axum-sqlx (written for the corpus): 10k users, 100k
-- articles with 1-3 tags from 300, 100k favorites, 100k comments, 20k follows.
BEGIN;
INSERT INTO "user" (username, email, bio, password_hash)
SELECT 'user' || g, 'user' || g || '@example.com', 'Writes about topic ' || (g % 97), 'not-a-hash-' || g
FROM generate_series(1, 10000) g;

CREATE TEMP TABLE u AS SELECT user_id, row_number() OVER (ORDER BY username) AS rn FROM "user";
CREATE INDEX ON u (rn);

INSERT INTO article (user_id, slug, title, description, body, tag_list, created_at, updated_at)
SELECT u.user_id, 'article-' || g, 'Article number ' || g, 'A description of article ' || g,
       repeat('Lorem ipsum dolor sit amet, consectetur adipiscing elit. ', 8 + g % 16),
       (ARRAY['tag-' || (g % 300), 'tag-' || ((g * 7) % 300), 'tag-' || ((g * 13) % 300)])[1:1 + g % 3],
       now() - (g || ' minutes')::interval, now() - (g || ' minutes')::interval
FROM generate_series(1, 100000) g JOIN u ON u.rn = 1 + g % 10000;

CREATE TEMP TABLE a AS SELECT article_id, row_number() OVER (ORDER BY slug) AS rn FROM article;
CREATE INDEX ON a (rn);

INSERT INTO article_favorite (article_id, user_id)
SELECT a.article_id, u.user_id FROM generate_series(1, 100000) g
JOIN a ON a.rn = 1 + (g * 13) % 100000 JOIN u ON u.rn = 1 + (g * 31) % 10000
ON CONFLICT DO NOTHING;

INSERT INTO article_comment (article_id, user_id, body, created_at)
SELECT a.article_id, u.user_id, 'Comment ' || g || ': ' || repeat('nice post ', 1 + g % 5), now() - (g || ' seconds')::interval
FROM generate_series(1, 100000) g JOIN a ON a.rn = 1 + (g * 17) % 100000 JOIN u ON u.rn = 1 + (g * 7) % 10000;

INSERT INTO follow (following_user_id, followed_user_id)
SELECT f.user_id, t.user_id FROM generate_series(1, 20000) g
JOIN u f ON f.rn = 1 + g % 10000 JOIN u t ON t.rn = 1 + (g * 37 + 1) % 10000
WHERE f.user_id <> t.user_id ON CONFLICT DO NOTHING;
COMMIT;
