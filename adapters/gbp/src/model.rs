//! Resource names and the JSON resources of the My Business API v4
//! (`ReviewReply`, `LocalPost`), with Google's field names.

use serde::{Deserialize, Serialize};

use crate::error::{AdapterError, Error};

/// A location: `accounts/{accountId}/locations/{locationId}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LocationName {
    account: String,
    location: String,
}

fn check_id(field: &'static str, id: &str) -> Result<(), Error> {
    let bad = id.is_empty()
        || id == "."
        || id == ".."
        || id.chars().any(|c| {
            c == '/' || c == '?' || c == '#' || c == '%' || c.is_whitespace() || c.is_control()
        });
    if bad {
        return Err(AdapterError::InvalidInput {
            field,
            reason: "must be a non-empty id without '/', '?', '#', '%' or spaces".to_owned(),
        }
        .into());
    }
    Ok(())
}

impl LocationName {
    /// A location from its account and location ids.
    ///
    /// # Errors
    ///
    /// [`AdapterError::InvalidInput`] when an id is empty or holds `/`, `?`,
    /// `#`, `%` or white space.
    pub fn new(account: impl Into<String>, location: impl Into<String>) -> Result<Self, Error> {
        let (account, location) = (account.into(), location.into());
        check_id("account id", &account)?;
        check_id("location id", &location)?;
        Ok(Self { account, location })
    }

    /// Parses `accounts/{accountId}/locations/{locationId}`.
    ///
    /// # Errors
    ///
    /// [`AdapterError::InvalidInput`] for any other shape.
    pub fn parse(name: &str) -> Result<Self, Error> {
        match name.split('/').collect::<Vec<_>>().as_slice() {
            ["accounts", a, "locations", l] => Self::new(*a, *l),
            _ => Err(AdapterError::InvalidInput {
                field: "location name",
                reason: "expected accounts/{accountId}/locations/{locationId}".to_owned(),
            }
            .into()),
        }
    }

    /// The account id.
    pub fn account(&self) -> &str {
        &self.account
    }

    /// The location id.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// A review of this location.
    ///
    /// # Errors
    ///
    /// [`AdapterError::InvalidInput`] when the review id is not a valid id.
    pub fn review(&self, review: impl Into<String>) -> Result<ReviewName, Error> {
        let review = review.into();
        check_id("review id", &review)?;
        Ok(ReviewName {
            location: self.clone(),
            review,
        })
    }

    pub(crate) fn segments(&self) -> [&str; 5] {
        ["v4", "accounts", &self.account, "locations", &self.location]
    }
}

impl std::fmt::Display for LocationName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "accounts/{}/locations/{}", self.account, self.location)
    }
}

/// A review: `accounts/{accountId}/locations/{locationId}/reviews/{reviewId}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReviewName {
    location: LocationName,
    review: String,
}

impl ReviewName {
    /// A review from its account, location and review ids.
    ///
    /// # Errors
    ///
    /// [`AdapterError::InvalidInput`] when an id is not valid.
    pub fn new(
        account: impl Into<String>,
        location: impl Into<String>,
        review: impl Into<String>,
    ) -> Result<Self, Error> {
        LocationName::new(account, location)?.review(review)
    }

    /// Parses `accounts/{a}/locations/{l}/reviews/{r}`.
    ///
    /// # Errors
    ///
    /// [`AdapterError::InvalidInput`] for any other shape.
    pub fn parse(name: &str) -> Result<Self, Error> {
        match name.split('/').collect::<Vec<_>>().as_slice() {
            ["accounts", a, "locations", l, "reviews", r] => Self::new(*a, *l, *r),
            _ => Err(AdapterError::InvalidInput {
                field: "review name",
                reason: "expected accounts/{accountId}/locations/{locationId}/reviews/{reviewId}"
                    .to_owned(),
            }
            .into()),
        }
    }

    /// The location.
    pub fn location(&self) -> &LocationName {
        &self.location
    }

    /// The review id.
    pub fn review(&self) -> &str {
        &self.review
    }
}

impl std::fmt::Display for ReviewName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/reviews/{}", self.location, self.review)
    }
}

/// The owner's reply to a review (`ReviewReply`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ReviewReply {
    /// The reply text (at most 4,096 bytes).
    #[serde(default)]
    pub comment: String,
    /// Output only: when the reply was last modified (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_time: Option<String>,
}

/// The topic type of a local post (`LocalPostTopicType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[non_exhaustive]
pub enum TopicType {
    /// Basic information: summary and images.
    Standard,
    /// Basic information and an event.
    Event,
    /// Basic information, an event and offer content.
    Offer,
    /// High-priority announcement (not always available).
    Alert,
    /// Not specified, or a value this version does not know.
    #[serde(rename = "LOCAL_POST_TOPIC_TYPE_UNSPECIFIED", other)]
    Unspecified,
}

/// What a call-to-action button does (`ActionType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[non_exhaustive]
pub enum ActionType {
    /// Book an appointment, table, etc.
    Book,
    /// Order something.
    Order,
    /// Browse a product catalog.
    Shop,
    /// See more on the website.
    LearnMore,
    /// Register, sign up or join.
    SignUp,
    /// Deprecated by Google; use an `OFFER` post instead.
    GetOffer,
    /// Call the business (leave `url` unset).
    Call,
    /// Not specified, or a value this version does not know.
    #[serde(rename = "ACTION_TYPE_UNSPECIFIED", other)]
    Unspecified,
}

/// A call-to-action button (`CallToAction`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct CallToAction {
    /// What the button does.
    pub action_type: ActionType,
    /// Where it leads (unset for `CALL`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

impl CallToAction {
    /// A button of `action_type` leading to `url`.
    pub fn new(action_type: ActionType, url: Option<String>) -> Self {
        Self { action_type, url }
    }
}

/// The format of a media item (`MediaFormat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[non_exhaustive]
pub enum MediaFormat {
    /// A photo.
    Photo,
    /// A video.
    Video,
    /// Not specified, or a value this version does not know.
    #[serde(rename = "MEDIA_FORMAT_UNSPECIFIED", other)]
    Unspecified,
}

/// A photo or video of a post (`MediaItem`). For local posts `sourceUrl` is
/// the only supported data field: Google fetches the media from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct MediaItem {
    /// Photo or video.
    pub media_format: MediaFormat,
    /// Where Google fetches the media.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_url: Option<String>,
    /// Output only: Google's copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub google_url: Option<String>,
    /// Output only: the media item's resource name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl MediaItem {
    /// A photo fetched from `url`.
    pub fn photo(url: impl Into<String>) -> Self {
        Self {
            media_format: MediaFormat::Photo,
            source_url: Some(url.into()),
            google_url: None,
            name: None,
        }
    }

    /// A video fetched from `url`.
    pub fn video(url: impl Into<String>) -> Self {
        Self {
            media_format: MediaFormat::Video,
            ..Self::photo(url)
        }
    }

    fn for_create(&self) -> Self {
        Self {
            media_format: self.media_format,
            source_url: self.source_url.clone(),
            google_url: None,
            name: None,
        }
    }
}

/// A calendar date (`google.type.Date`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Date {
    /// Year.
    pub year: i32,
    /// Month, 1 to 12.
    pub month: u32,
    /// Day of month.
    pub day: u32,
}

impl Date {
    /// A date.
    pub fn new(year: i32, month: u32, day: u32) -> Self {
        Self { year, month, day }
    }
}

/// A time of day (`google.type.TimeOfDay`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TimeOfDay {
    /// Hours, 0 to 23.
    #[serde(default)]
    pub hours: u32,
    /// Minutes, 0 to 59.
    #[serde(default)]
    pub minutes: u32,
    /// Seconds, 0 to 59.
    #[serde(default)]
    pub seconds: u32,
    /// Nanoseconds.
    #[serde(default)]
    pub nanos: u32,
}

impl TimeOfDay {
    /// A time of day in hours and minutes.
    pub fn hm(hours: u32, minutes: u32) -> Self {
        Self {
            hours,
            minutes,
            ..Self::default()
        }
    }
}

/// When an event runs (`TimeInterval`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct TimeInterval {
    /// First day.
    pub start_date: Date,
    /// Start time on the first day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<TimeOfDay>,
    /// Last day.
    pub end_date: Date,
    /// End time on the last day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<TimeOfDay>,
}

impl TimeInterval {
    /// Whole days from `start` to `end`.
    pub fn days(start: Date, end: Date) -> Self {
        Self {
            start_date: start,
            start_time: None,
            end_date: end,
            end_time: None,
        }
    }
}

/// An event featured in a post (`LocalPostEvent`); required for `EVENT` and
/// `OFFER` posts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct LocalPostEvent {
    /// The event's name.
    pub title: String,
    /// When it runs.
    pub schedule: TimeInterval,
}

impl LocalPostEvent {
    /// An event.
    pub fn new(title: impl Into<String>, schedule: TimeInterval) -> Self {
        Self {
            title: title.into(),
            schedule,
        }
    }
}

/// Offer details (`LocalPostOffer`); only for `OFFER` posts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct LocalPostOffer {
    /// A code usable in store or online.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coupon_code: Option<String>,
    /// Where to redeem online.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redeem_online_url: Option<String>,
    /// Terms and conditions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terms_conditions: Option<String>,
}

/// A local post (`LocalPost`). Build one with [`LocalPost::standard`] (or
/// [`LocalPost::new`]) and the `with_*` methods; fields marked *output
/// only* are filled by Google and never sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct LocalPost {
    /// Output only: `accounts/{a}/locations/{l}/localPosts/{id}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The post's language (BCP 47, for example `en-US`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language_code: Option<String>,
    /// The post's body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// The button; ignored by Google for `OFFER` posts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_to_action: Option<CallToAction>,
    /// Event details (`EVENT` and `OFFER`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<LocalPostEvent>,
    /// Photos and videos.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub media: Vec<MediaItem>,
    /// Required: standard, event, offer or alert.
    #[serde(default = "unspecified")]
    pub topic_type: TopicType,
    /// Alert sub-type (only for `ALERT` posts), for example `COVID_19`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_type: Option<String>,
    /// Offer details (only for `OFFER` posts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offer: Option<LocalPostOffer>,
    /// Output only: creation time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_time: Option<String>,
    /// Output only: last change (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_time: Option<String>,
    /// Output only: `LIVE`, `PROCESSING` or `REJECTED`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Output only: link to the post in Google Search.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search_url: Option<String>,
}

impl Default for LocalPost {
    fn default() -> Self {
        Self::new(TopicType::Unspecified)
    }
}

fn unspecified() -> TopicType {
    TopicType::Unspecified
}

impl LocalPost {
    /// A post of `topic_type` with nothing else set.
    pub fn new(topic_type: TopicType) -> Self {
        Self {
            name: None,
            language_code: None,
            summary: None,
            call_to_action: None,
            event: None,
            media: Vec::new(),
            topic_type,
            alert_type: None,
            offer: None,
            create_time: None,
            update_time: None,
            state: None,
            search_url: None,
        }
    }

    /// A `STANDARD` post with a language and a summary.
    pub fn standard(language_code: impl Into<String>, summary: impl Into<String>) -> Self {
        Self::new(TopicType::Standard)
            .with_language(language_code)
            .with_summary(summary)
    }

    /// Sets the language.
    pub fn with_language(mut self, language_code: impl Into<String>) -> Self {
        self.language_code = Some(language_code.into());
        self
    }

    /// Sets the summary.
    pub fn with_summary(mut self, summary: impl Into<String>) -> Self {
        self.summary = Some(summary.into());
        self
    }

    /// Sets the call to action.
    pub fn with_call_to_action(mut self, cta: CallToAction) -> Self {
        self.call_to_action = Some(cta);
        self
    }

    /// Adds a media item.
    pub fn with_media(mut self, item: MediaItem) -> Self {
        self.media.push(item);
        self
    }

    /// Sets the event.
    pub fn with_event(mut self, event: LocalPostEvent) -> Self {
        self.event = Some(event);
        self
    }

    /// Sets the offer.
    pub fn with_offer(mut self, offer: LocalPostOffer) -> Self {
        self.offer = Some(offer);
        self
    }

    /// The post as sent to `localPosts.create`: output-only fields removed,
    /// so a post read back from Google can be passed in again unchanged.
    pub(crate) fn for_create(&self) -> Self {
        Self {
            name: None,
            create_time: None,
            update_time: None,
            state: None,
            search_url: None,
            media: self.media.iter().map(MediaItem::for_create).collect(),
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_validate() {
        let l = LocationName::parse("accounts/123/locations/456").unwrap();
        assert_eq!((l.account(), l.location()), ("123", "456"));
        assert_eq!(l.to_string(), "accounts/123/locations/456");
        let r = ReviewName::parse("accounts/1/locations/2/reviews/AbC-_9").unwrap();
        assert_eq!(r.review(), "AbC-_9");
        assert!(LocationName::new("", "1").is_err());
        assert!(LocationName::new("1", "a/b").is_err());
        assert!(ReviewName::new("1", "2", "..").is_err());
        assert!(LocationName::parse("locations/1").is_err());
    }

    #[test]
    fn local_post_json_uses_google_field_names() {
        let post = LocalPost::standard("en-US", "Spring sale")
            .with_call_to_action(CallToAction::new(
                ActionType::LearnMore,
                Some("https://example.com".into()),
            ))
            .with_media(MediaItem::photo("https://example.com/p.jpg"));
        let v = serde_json::to_value(&post).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "languageCode": "en-US",
                "summary": "Spring sale",
                "callToAction": {"actionType": "LEARN_MORE", "url": "https://example.com"},
                "media": [{"mediaFormat": "PHOTO", "sourceUrl": "https://example.com/p.jpg"}],
                "topicType": "STANDARD"
            })
        );
    }

    #[test]
    fn reads_google_output_and_drops_it_for_create() {
        let v = serde_json::json!({
            "name": "accounts/1/locations/2/localPosts/9",
            "languageCode": "en",
            "summary": "Hi",
            "topicType": "SOMETHING_NEW",
            "state": "LIVE",
            "createTime": "2024-01-01T00:00:00Z",
            "media": [{"mediaFormat": "PHOTO", "googleUrl": "https://lh3/x", "name": "m/1"}]
        });
        let post: LocalPost = serde_json::from_value(v).unwrap();
        assert_eq!(post.topic_type, TopicType::Unspecified);
        assert_eq!(post.state.as_deref(), Some("LIVE"));
        let sent = serde_json::to_value(post.for_create()).unwrap();
        assert!(sent.get("name").is_none());
        assert!(sent.get("createTime").is_none());
        assert!(sent["media"][0].get("googleUrl").is_none());
    }
}
